"""One error hierarchy, with messages a site engineer can act on."""

from __future__ import annotations

from dataclasses import dataclass


class BusguardError(Exception):
    """Base of every error busguard raises on purpose."""


@dataclass(frozen=True)
class ConfigProblem:
    """One problem in a configuration file: where it is, what is wrong, what would be valid."""

    file: str
    key: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.key}: {self.message}"


class ConfigError(BusguardError):
    """A configuration file (site.toml, a meter profile) is not valid.

    Carries every problem found, not only the first, so one `busguard check` shows them all.
    """

    def __init__(self, problems: list[ConfigProblem]):
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class UsageError(BusguardError):
    """The command was called wrongly (e.g. no site file given and none found): exit 2."""


class PluginError(BusguardError):
    """A plugin could not be loaded or registered a conflicting type."""


class DriverError(BusguardError):
    """A driver could not start (bad port, missing device) or hit an unrecoverable fault."""


class RecordingError(BusguardError):
    """A recording file is not valid or does not fit the site it is replayed against."""
