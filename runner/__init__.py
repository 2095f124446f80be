"""The run: runtime and lock, Big Bro control, the cycle, replay and reports, brains, reconcile, status."""
