# Convenience wrappers around the scripts the README names.
.PHONY: setup run stop test status
setup: ; bash scripts/setup.sh
run: ; bash scripts/run.sh
stop: ; bash scripts/stop.sh
test: ; bash scripts/test.sh
status: ; .venv/bin/ccpbx-ctl status
