"""Media in and out: video/image I/O, resizing, and the one file discovery used by encode, train and eval."""
