"""One adapter per filesystem library; see `base.ReaderAdapter`."""
