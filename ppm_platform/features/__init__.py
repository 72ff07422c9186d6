"""Feature jobs (Spark) that build the feature tables behind the Feast views, the shared Spark session and
writers (:mod:`~ppm_platform.features.spark`), and the feature-row -> model-input encoding shared by training and
serving (:mod:`~ppm_platform.features.encoding`)."""
