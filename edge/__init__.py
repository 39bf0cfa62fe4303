"""edge: an offline skin-screening aid for Raspberry Pi and Jetson devices. Not a diagnostic device."""

__version__ = "0.1.0"
