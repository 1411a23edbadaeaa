"""Laurel's segmentation models: dill-packaged model objects, Keras networks, learning, merging, phantom."""
