"""sv-backups: `pulumi up --stack <env>` declares every backup of one Super Validator node.

Thin on purpose: read the config, validate all of it, then declare (see components/program.py).
"""

import pulumi

from components.program import declare
from components.settings import SettingsError, load_settings
from components.stack_config import read_raw_config

try:
    settings = load_settings(read_raw_config(), stack=pulumi.get_stack())
except SettingsError as error:
    # One message per problem, and nothing declared.
    raise pulumi.RunError(str(error)) from None

declare(settings)
