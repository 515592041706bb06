"""Everything DICOM that is a library (no listening sockets): anonymization, and the SCU/SCP
helpers other modules add here. Subpackages are imported explicitly by their users."""
