"""What the worker processes run: segmentation, review, learning, write-back, federation sync, retention."""
