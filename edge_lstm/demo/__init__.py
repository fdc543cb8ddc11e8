"""`edge-lstm demo`: a simulated fleet, a private broker, the live view and the summary."""
