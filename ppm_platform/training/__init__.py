"""Training: PPM pre-training, Base / URM training (one streamed loop for any size), the practitioner baselines
(Popularity, GBDT), CTR metrics and evaluation slices, and bounded-memory readers of the training inputs."""
