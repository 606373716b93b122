"""Files in and out: decoding radiographs, atomic writes, walking folders, result rows."""
