"""blade-go inside a chaosblade release: blade's calling conventions (conventions.py) and the
reversible install of blade-go into a release (install.py: merged os spec + bin/chaos_os
dispatcher)."""
