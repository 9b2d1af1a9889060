"""The PyTorch side: the stream as an IterableDataset, models, the training loop, evaluation."""
