"""The two kinds of errors the pipeline raises on bad input.

ConfigError is raised at planning time (from the config and the files it names, cheaply); DataError by
the first job that reads data that turns out to be unusable. Both messages name the key or the file.
"""


class TokenfairError(Exception):
    """Base class: a problem with the user's input, reported without a traceback-worthy bug."""


class ConfigError(TokenfairError, ValueError):
    """A config value or a file it names is wrong; the message names the key."""


class DataError(TokenfairError, ValueError):
    """Data read by a job is unusable (empty split, bad file); the message names the file."""
