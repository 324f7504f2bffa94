"""The code that runs inside the backup pods: `python -m jobs <command>` (see docs/jobs.md)."""

import os

# The image sets SV_BACKUPS_VERSION to the git revision it was built from (docs/jobs.md "Build and push");
# manifests record it as `code_version`.
__version__ = os.environ.get("SV_BACKUPS_VERSION", "0.1.0+local")
