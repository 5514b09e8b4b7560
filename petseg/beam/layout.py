"""OUT's layout: the name of everything the job writes (ARCHITECTURE.md, contracts 4-7).

A leaf module: it imports nothing, so every module that names a file or
folder of OUT, on the workers or in the driver, takes the name from here.
"""

MASKS_DIR = "masks"
OVERLAYS_DIR = "overlays"
STATS_DIR = "stats"
ERRORS_DIR = "errors"
COCO_DIR = "coco"
COCO_FILE = "coco.json"
SUMMARY_FILE = "summary.json"
RUN_RECORD_FILE = "petseg-run.json"
REPORT_FILE = "report.html"
# In every temporary's name: a write cut short leaves a file that listing
# skips and a rerun removes.
TEMP_MARKER = ".tmp-"
