"""Training (issue 11): the YOLOv8 loss (``detect_loss``, ``assigner``, ``boxes``), optimiser + warm-up (``optim``),
EMA of weights (``ema``), one loop (``loop.fit``), and the zoo trainers ``detector.train_detector`` and
``classifier.train_classifier``. Trained weights are plain state_dicts; ``attn-deploy export --weights`` loads them.
"""
