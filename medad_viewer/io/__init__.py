"""Loading studies: DICOM series, medical volumes and plain images; windowing; metadata. No Qt."""
