"""Online serving: the ONNX export of the ranker, the :class:`~ppm_platform.serving.ranker.Ranker` over the Feast
online store and its item cache, the HTTP service, model reload, new-item pushes and train/serve parity."""
