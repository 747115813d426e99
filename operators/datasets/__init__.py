"""DVC-versioned datasets in S3. ``pin`` needs dvc (imported inside); ``fetch`` runs on compute nodes."""
