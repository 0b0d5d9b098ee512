"""Generated from proto/agentry/v1 by clients/python/scripts/generate. Do not edit."""
