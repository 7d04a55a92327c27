"""Stage 6: the promotion gate (SLOs + baseline comparison) and its report."""
