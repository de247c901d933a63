"""Applications of the CLI: workflows made of `panoptic-detr` commands (the demo, the base
model's rebuild). They sit above `commands/` and `cli`, and nothing below imports them."""
