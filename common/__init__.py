"""What every package of the project shares: the error classes and exit codes, crash-safe file
writes and output-folder guards, and the command-line boundary of every command. It imports
nothing of ``datasets``, ``models`` or ``learning``; all three may import it (docs/design.md)."""
