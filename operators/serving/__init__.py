"""Inference servers. ``v2`` speaks the Open Inference Protocol V2 (MLServer, Triton, KServe)."""
