"""sv-backups Pulumi components: the resources each backup concern declares.

Import-light on purpose: nothing here imports pulumi at package import time, so `import components.settings`
(the config schema, used by the engines) stays cheap. The pure rules the components build on live in `rules/`.
"""
