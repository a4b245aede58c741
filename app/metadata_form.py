"""The patient form of the sidebar, shown for a model that reads each recording's metadata (BTS's `clap_bts`).

Four fields - age in years, sex, chest location (the ICBHI codes, in words), device (the ICBHI names) - each may be left
blank, which the model reads as "unknown" (and the result says so). What the form gives is checked by
`lungsound.models.clap_prompt.check_metadata`, the same check `Predictor.predict(metadata=...)` and
`lungsound predict --meta` apply.
"""

from __future__ import annotations

from lungsound.models.clap_prompt import DEVICES, LOCATIONS, check_metadata

BLANK = ""
SEXES = {BLANK: "unknown", "F": "female", "M": "male"}


def metadata_form(sidebar) -> dict:
    """The sidebar's patient fields (a Streamlit container) as a checked metadata mapping; blank fields None."""
    sidebar.header("Patient")
    sidebar.caption("This model reads the patient's details with the sound. Leave a field blank if it is not known.")
    age = sidebar.number_input("Age (years)", min_value=0.0, max_value=120.0, value=None, step=1.0, key="meta_age")
    sex = sidebar.selectbox("Sex", list(SEXES), format_func=SEXES.get, key="meta_sex")
    location = sidebar.selectbox("Chest location", [BLANK, *LOCATIONS],
                                 format_func=lambda c: LOCATIONS.get(c, "unknown"), key="meta_location")
    device = sidebar.selectbox("Device", [BLANK, *DEVICES], format_func=lambda d: d or "unknown", key="meta_device")
    return check_metadata({"age": age, "sex": sex, "location": location, "device": device})
