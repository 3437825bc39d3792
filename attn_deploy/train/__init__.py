"""Training: the YOLOv8 detection loss, optimiser with warm-up, EMA of weights, and compact loops for the zoo."""
