"""Training room: encoder-state caches, autoencoder pre-training, decoder fine-tuning, teacher preparation."""
