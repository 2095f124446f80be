"""The engine under the tools: a position's life (entry, fill, backstop, exit), exit advice, spend, the cycle's workflow."""
