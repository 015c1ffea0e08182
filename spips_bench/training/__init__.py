"""Training the linear heads of a deep metric on 2AFC judgments (the LPIPS protocol)."""
