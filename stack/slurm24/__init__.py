"""A second local Slurm cluster (24.11, Debian trixie chroot) for the REST transport's v0.0.40+ shapes."""
