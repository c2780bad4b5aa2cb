"""The biomarkers_wide view: one row per (user, lab upload), one column per tracked code."""

from django.db import migrations

# Frozen here: a later change of the tracked codes is a new migration that replaces the view.
CODES = [
    "hemoglobin",
    "hematocrit",
    "wbc",
    "platelets",
    "glucose_fasting",
    "hba1c",
    "total_cholesterol",
    "ldl_cholesterol",
    "hdl_cholesterol",
    "triglycerides",
    "creatinine",
    "egfr",
    "alt",
    "ast",
    "tsh",
    "free_t4",
    "vitamin_d_25_hydroxy",
    "vitamin_b12",
    "ferritin",
    "iron",
    "c_reactive_protein_hs",
    "testosterone_total",
    "cortisol",
    "insulin_fasting",
    "uric_acid",
]

COLUMNS = ",\n    ".join(f"MAX(CASE WHEN code = '{code}' THEN value END) AS {code}" for code in CODES)

CREATE = f"""
CREATE VIEW biomarkers_wide AS
SELECT
    lab_upload_id AS id,
    user_id,
    lab_upload_id,
    MIN(collected_at) AS collected_at,
    {COLUMNS}
FROM biomarkers
GROUP BY user_id, lab_upload_id
"""


class Migration(migrations.Migration):
    dependencies = [("ingest", "0004_parked_reference_index")]

    operations = [migrations.RunSQL(CREATE, "DROP VIEW IF EXISTS biomarkers_wide")]
