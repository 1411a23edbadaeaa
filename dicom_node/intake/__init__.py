"""The intake process: the SCP, durable storage, the index writes, study completion. Never imports TensorFlow."""
