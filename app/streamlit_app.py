"""Lung sound review: a clinician-facing demo of a lungsound model (research use only, not a medical device).

Run with `make app`, or `streamlit run app/streamlit_app.py` from the repository root. The page reads top to bottom:

1. the research-use notice, the model in use (sidebar picker, or a Hugging Face hub id typed above it; a banner when
   it was trained on synthetic data);
2. for a model that reads the patient's metadata (BTS), a short form in the sidebar (age, sex, chest location,
   device; blank = unknown, which the result then says);
3. a recording: uploaded (wav, flac, ogg, mp3; at most MAX_UPLOAD_MB and MAX_SECONDS) or recorded in the browser;
4. the recording-level summary in plain words with the calibrated probability of each finding, then any quality warning;
5. the audio player, a timeline of the class probabilities per segment, the waveform, and the spectrogram with the
   explanation of one chosen segment (a red overlay for spectrogram models; for waveform models a time-saliency strip
   under the enlarged segment, with a caption saying so);
6. a table of every segment, a JSON download of the results, and the model card (with the model's input, the kind
   of explanation shown and the runtime).

An exported model (`lungsound export`, listed as "ONNX int8", "OpenVINO int8", "OpenVINO bf16", ...) analyses the
recording with its runtime (ONNX Runtime or OpenVINO);
the explanation of the segment on screen is then computed with the folder's PyTorch weights (that segment only), and a
folder exported without them says plainly that the fast model has no explanation (docs/onnx.md, docs/export.md).

Uploads are analysed in memory (`Predictor.predict` takes the bytes); nothing is written to disk. The model is loaded
once per server process (`st.cache_resource`, keyed by its folder or MLflow URI). Every bad input - not audio, empty or
corrupt, too large, too long, too short, silent - ends in a message on the page, and the next upload works as usual.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import threading
from pathlib import Path

import streamlit as st

APP_DIR = Path(__file__).resolve().parent
if str(APP_DIR) not in sys.path:
    sys.path.insert(0, str(APP_DIR))

import components as ui  # noqa: E402  (the app folder is put on sys.path just above)
from metadata_form import metadata_form  # noqa: E402
from models import ENV_MODEL, discover_models, hub_choice, load_predictor  # noqa: E402

from lungsound.errors import LungsoundError  # noqa: E402

MAX_UPLOAD_MB = 50
MAX_SECONDS = 120.0
MIC_RATE = 16000  # Hz: what the browser records at (any rate would do: `Predictor.predict` resamples to the model's)
AUDIO_TYPES = ["wav", "flac", "ogg", "mp3"]
SEGMENTATIONS = {"auto": "Automatic (breathing cycles, else windows)", "breath": "Detected breathing cycles",
                 "windows": "Fixed windows", "cycles": "Cycles of the annotation file"}
NOTICE = ("**Research use only - not a medical device.** This page shows what a machine-learning model hears in a "
          "lung sound recording. It has not been clinically validated and must not be used to diagnose, treat or "
          "triage anyone. Always rely on your own auscultation and clinical judgement.")

st.set_page_config(page_title="Lung sound review (research use only)", page_icon=":material/pulmonology:",
                   layout="wide")


# --------------------------------------------------------------------------------------------- cached resources
@st.cache_data(ttl=60, show_spinner=False)
def find_models(env_model: str, cwd: str, tracking_uri: str):
    """The picker's entries; the arguments only key the cache (discovery reads them from the environment)."""
    return discover_models(Path(cwd) / "outputs")


@st.cache_resource(show_spinner="Loading the model (once per server)...", max_entries=4)
def get_predictor(source: str, runtime: str):
    """The model of a picker entry, and a lock: sessions share it, and an explanation hooks into its layers."""
    return load_predictor(source, runtime), threading.Lock()


def remember(key: tuple, compute):
    """One result per session and key (the latest analysis and its explanations), so reruns do not recompute."""
    store = st.session_state.setdefault("results", {})
    if key not in store:
        if len(store) > 32:
            store.clear()
        store[key] = compute()
    return store[key]


def mark_latest(which: str) -> None:
    st.session_state["latest_input"] = which


def use_annotation_cycles() -> None:
    """A new annotation file selects its cycles as the segments; removing it goes back to automatic."""
    st.session_state["segmentation"] = "cycles" if st.session_state.get("annotation") is not None else "auto"


# ------------------------------------------------------------------------------------------------ page top: model
st.warning(NOTICE, icon=":material/warning:")
st.title("Lung sound review")
st.caption("Upload or record a lung sound; the model marks segments with crackles or wheezes and explains its output.")

discovery = find_models(os.environ.get(ENV_MODEL, ""), os.getcwd(), os.environ.get("MLFLOW_TRACKING_URI", ""))
for note in discovery.notes:
    st.sidebar.caption(f":material/info: {note}")
st.sidebar.header("Model")
hub_id = st.sidebar.text_input("Hugging Face hub id (optional)", key="hub_model", placeholder="USER/NAME",
                               help="A model pushed with `lungsound push`: downloaded once into the hub cache, then "
                                    "read from there (offline too). While filled in, it is the model used.")
hub = None
if hub_id.strip():
    try:
        hub = hub_choice(hub_id)
    except LungsoundError as exc:
        st.sidebar.error(str(exc), icon=":material/error:")
if not discovery.choices and hub is None:
    st.error("**No trained model was found.** Run `make quickstart` in the lungsound folder (it trains a small demo "
             f"model in a few minutes), or set `{ENV_MODEL}` to a model folder, then reload this page.",
             icon=":material/error:")
    st.stop()

choice = hub
if discovery.choices:
    labels = [c.label for c in discovery.choices]
    picked = st.sidebar.selectbox("Model to use", labels, index=0, key="model", disabled=hub is not None,
                                  help="Registered MLflow models, the quickstart model, checkpoint folders and "
                                       "exported (ONNX, OpenVINO) models, which analyse faster on a CPU.")
    choice = hub if hub is not None else discovery.choices[labels.index(picked)]
st.sidebar.caption(f"Source: `{choice.source}`")
try:
    predictor, model_lock = get_predictor(choice.source, choice.runtime)
except Exception as exc:  # a broken or incompatible model folder: say which, let the user pick another
    st.error(f"**The model could not be loaded.** {exc}\n\nPick another model in the sidebar, or run "
             "`make quickstart` to train the demo model.", icon=":material/error:")
    st.stop()

card = predictor.card
if card.get("synthetic"):
    st.warning("**This model was trained on synthetic data** (the built-in demo set of `make quickstart`). Its "
               "results show how the app works; they mean nothing about a real patient.", icon=":material/science:")

st.sidebar.header("Analysis")
annotation_file = st.sidebar.file_uploader(
    "Optional: ICBHI annotation (.txt)", type=["txt"], key="annotation", max_upload_size=1,
    on_change=use_annotation_cycles,
    help="One breathing cycle per line: start end crackles wheezes (seconds). Its cycles become the segments.")
options = [k for k in SEGMENTATIONS if k != "cycles" or annotation_file is not None]
segmentation = st.sidebar.radio("Segments", options, format_func=SEGMENTATIONS.get, key="segmentation")
st.sidebar.caption(f"Recordings up to {MAX_SECONDS:.0f} s and {MAX_UPLOAD_MB} MB. Files are analysed in memory "
                   "and never stored.")
metadata = metadata_form(st.sidebar) if predictor.uses_metadata else None  # BTS: age, sex, location, device

# --------------------------------------------------------------------------------------------- the recording
left, right = st.columns([3, 2])
uploaded = left.file_uploader(f"Upload a recording ({', '.join(AUDIO_TYPES)})", type=AUDIO_TYPES, key="upload",
                              max_upload_size=MAX_UPLOAD_MB, on_change=mark_latest, args=("upload",))
recorded = right.audio_input("Or record one with the microphone", key="microphone", sample_rate=MIC_RATE,
                             on_change=mark_latest, args=("microphone",))
inputs = {"upload": uploaded, "microphone": recorded}
latest = st.session_state.get("latest_input")
audio = inputs.get(latest) or uploaded or recorded

if audio is None:
    st.info("Upload a recording or record one to see the analysis here.", icon=":material/upload_file:")
else:
    data = audio.getvalue()
    name = audio.name or "recording"
    if len(data) > MAX_UPLOAD_MB * 1024 * 1024:
        st.error(f"**{name} is too large** ({len(data) / 2**20:.1f} MB; the limit is {MAX_UPLOAD_MB} MB). Please "
                 f"upload a shorter recording (at most {MAX_SECONDS:.0f} s).", icon=":material/error:")
        st.stop()
    annotation = None
    if segmentation == "cycles" and annotation_file is not None:
        from lungsound.data.annotations import parse_annotation_text

        try:
            text = annotation_file.getvalue().decode("utf-8", errors="replace")
            annotation = [(c.start, c.end) for c in parse_annotation_text(text, annotation_file.name)]
        except LungsoundError as exc:
            st.error(f"**The annotation file cannot be used.** {exc}", icon=":material/error:")
            st.stop()
    key = (choice.source, hashlib.sha1(data).hexdigest(), segmentation, str(annotation), str(metadata))
    try:
        with st.spinner(f"Analysing {name}..."), model_lock:
            pred = remember(key, lambda: predictor.predict(data, name=name, segmentation=segmentation,
                                                           annotation=annotation, max_seconds=MAX_SECONDS,
                                                           metadata=metadata))
    except LungsoundError as exc:
        st.error(f"**This recording cannot be analysed.** {exc}\n\nPlease upload or record another one.",
                 icon=":material/error:")
        st.stop()
    except Exception as exc:  # anything unforeseen still ends in a message, never a traceback on the page
        st.error(f"**Something went wrong while analysing {name}** ({type(exc).__name__}: {exc}). Please try "
                 "another recording.", icon=":material/error:")
        st.stop()

    # ------------------------------------------------------------------------------------------ results
    classes = list(predictor.classes)
    summary = pred.summary
    st.subheader("Result")
    st.markdown(f"### {summary['text']}")
    st.markdown(f"**Mean probability of each finding over the {len(pred.segments)} segments:**")
    for column, c in zip(st.columns(len(classes)), classes):
        column.metric(ui.class_name(c).capitalize(), ui.percent(summary["probabilities"][c]))
    st.caption(ui.READING_RULE + " " + ui.segmentation_text(pred.segmentation, len(pred.segments)) + " "
               + ui.calibration_text(predictor.calibrated, predictor.temperature))
    for warning in pred.warnings:
        st.warning(warning, icon=":material/warning:")

    st.audio(data, format=audio.type or "audio/wav")
    abnormal = [1.0 - s.probabilities.get("normal", 0.0) for s in pred.segments]
    segment_key = f"segment-{key[1][:12]}-{segmentation}"  # a new recording starts at its most abnormal segment
    shown = st.session_state.get(segment_key, abnormal.index(max(abnormal)))
    st.image(ui.png(ui.timeline_figure(pred.segments, classes, pred.duration, shown)), width="stretch",
             alt="Probability of each finding per segment over time")

    st.subheader("Look at one segment")
    selected = st.selectbox("Segment", range(len(pred.segments)), index=abnormal.index(max(abnormal)),
                            format_func=lambda i: ui.segment_label(i, pred.segments[i]), key=segment_key,
                            help="Starts at the segment the model finds most abnormal.")
    st.image(ui.png(ui.waveform_figure(pred.waveform, predictor.sample_rate, pred.segments, selected)), width="stretch",
             alt="Waveform of the recording with the segment boundaries")
    explanation = None
    if predictor.exported and not predictor.can_explain:  # exported without PyTorch weights: say so plainly
        st.info(ui.no_explanation_fast(predictor.backend.title, predictor.backend.engine), icon=":material/info:")
    else:
        try:
            with model_lock:
                explanation = remember(key + ("explain", selected), lambda: predictor.explain(pred, selected))
        except Exception as exc:  # the plots still make sense without the overlay
            st.warning(f"No explanation for this segment: {exc}", icon=":material/warning:")
    spectrogram = remember(key + ("spectrogram",), lambda: ui.log_mel(pred.waveform, predictor.sample_rate))
    st.image(ui.png(ui.spectrogram_figure(spectrogram, pred.segments, selected, explanation)), width="stretch",
             alt="Spectrogram with the segment boundaries and the explanation of the selected segment"
             + (" (a time saliency strip under the enlarged segment)" if ui.is_time_explanation(explanation) else ""))
    if explanation is not None and ui.is_time_explanation(explanation):
        st.caption(ui.explanation_caption(explanation))
    if explanation is not None and predictor.exported:
        st.caption(ui.fast_model_caption(predictor.runtime_label))

    with st.expander("All segments (table) and download"):
        st.dataframe(ui.segments_table(pred.segments, classes), hide_index=True)
        st.download_button("Download the results (JSON)", json.dumps(pred.to_dict(), indent=2, default=float),
                           file_name=f"{Path(name).stem}_lungsound.json", mime="application/json")

with st.expander("Model card: what this model is, how well it did, and its limits"):
    st.markdown(ui.model_card_markdown(card))
