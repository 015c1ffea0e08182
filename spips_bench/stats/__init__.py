"""Pure-NumPy statistics: 2AFC and JND scores, correlations, bootstrap intervals, and the summary rows."""
