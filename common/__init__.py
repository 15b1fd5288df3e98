"""What every package of the project shares: the error classes and exit codes, and crash-safe
file writes. It imports nothing of ``datasets``, ``models`` or ``learning``; all three may
import it (docs/design.md)."""
