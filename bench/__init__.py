"""Speed and cost figures, printed, never asserted: `make bench`."""
