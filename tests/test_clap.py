"""BTS's metadata sentence, its tokens, CLAP's front end and the two CLAP classifiers on tiny configs built here
(docs/methods.md section 13)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import transformers
from transformers.convert_slow_tokenizer import bytes_to_unicode

from lungsound.data.database import open_database
from lungsound.errors import LungsoundError
from lungsound.models import create_model, model_spec
from lungsound.models.clap import FEATURE_EXTRACTOR, TINY, ClapFrontEnd, metadata_prompt
from lungsound.models.clap_prompt import PromptTokens, check_metadata, parse_metadata, pieces, prompt_pieces

S = "This sound was recorded"
PROMPTS = [  # (metadata, fields, the sentence written by hand)
    ({"age": 30, "sex": "M", "location": "Tc", "device": "Meditron"}, None,  # the authors' first example
     "This sound was recorded from the trachea of an adult male patient, using a Meditron stethoscope."),
    ({"age": 5, "sex": "F", "location": "Pl", "device": "AKGC417L"}, None,  # the authors' second example
     "This sound was recorded from the left posterior chest of a female pediatric patient, using an AKGC417L "
     "microphone."),
    ({"age": 19, "sex": "F", "location": "Ar", "device": "LittC2SE"}, None,  # 19 is adult
     f"{S} from the right anterior chest of an adult female patient, using a LittC2SE stethoscope."),
    ({"age": 18.9, "sex": "M", "location": "Lr", "device": "Litt3200"}, None,
     f"{S} from the right lateral chest of a male pediatric patient, using a Litt3200 stethoscope."),
    ({"age": 0.75, "sex": None, "location": "Al", "device": "Meditron"}, None,  # a child whose sex is missing
     f"{S} from the left anterior chest of an unknown pediatric patient, using a Meditron stethoscope."),
    ({"age": 70, "sex": "X", "location": "Pr", "device": None}, None,  # any sex but M is female; no device
     f"{S} from the right posterior chest of an adult female patient, using an unknown stethoscope."),
    ({}, None, f"{S} from the unknown of an unknown unknown patient, using an unknown stethoscope."),
    ({"age": 70, "sex": "F", "location": "Pl", "device": "AKGC417L"}, ["device"],
     f"{S}, using an AKGC417L microphone."),
    ({"age": 70, "sex": "F", "location": "Pl", "device": "AKGC417L"}, ["sex", "location"],
     f"{S} from the left posterior chest of a female patient."),
    ({"age": 8, "sex": "M", "location": "Pl", "device": "AKGC417L"}, ["age"], f"{S} of a pediatric patient."),
    ({"age": 8, "sex": "M"}, [], "No description."),
]


@pytest.mark.parametrize("meta, fields, sentence", PROMPTS)
def test_metadata_prompt_writes_the_hand_written_sentence(meta, fields, sentence):
    assert metadata_prompt(meta, fields) == sentence
    assert "".join(pieces(sentence)) == sentence and set(pieces(sentence)) <= set(prompt_pieces())


def test_patient_223_reads_left_lateral_chest_in_all_six_recordings_under_the_paper_protocol(icbhi_dir):
    recordings = [r for r in open_database(icbhi_dir).recordings if r.patient == 223]
    assert sorted(r.meta.location for r in recordings) == ["Al", "Ar", "Ll", "Lr", "Pl", "Pr"]
    for rec in recordings:
        assert metadata_prompt(rec.meta.as_mapping("paper")) == (
            f"{S} from the left lateral chest of an unknown unknown patient, using a Meditron stethoscope.")
    clean = {metadata_prompt(r.meta.as_mapping("clean"), ["location"]) for r in recordings}
    assert len(clean) == 6  # the recordings' own locations


@pytest.mark.parametrize("meta, problem", [
    ({"location": "Xy"}, "location must be one of Tc, Al"), ({"device": "iPhone"}, "device must be one of AKGC417L"),
    ({"age": -1}, "age must be a number of years >= 0"), ({"age": True}, "age must be a number")])
def test_bad_metadata_values_are_one_line_errors(meta, problem):
    with pytest.raises(LungsoundError, match=problem):
        metadata_prompt(meta)


def test_test_time_metadata_is_parsed_and_checked():
    assert parse_metadata("age=70,sex=f,location=Pl,device=Meditron") == {
        "age": 70.0, "sex": "F", "location": "Pl", "device": "Meditron"}
    assert parse_metadata("sex=M") == {"age": None, "sex": "M", "location": None, "device": None}
    assert check_metadata({"age": "", "sex": " ", "location": None}) == dict.fromkeys(("age", "sex", "location",
                                                                                        "device"))
    for text, problem in [("height=170", "key\\(s\\) height are not known"), ("age=old", "age must be a number"),
                          ("sex=X", "sex must be M or F"), ("age", "'age' is not KEY=VALUE"),
                          ("age=3,age=4", "'age' is given twice"), ("location=Tc,device=Foo", "device must be")]:
        with pytest.raises(LungsoundError, match=f"^--meta: .*{problem}") as info:
            parse_metadata(text)
        assert "\n" not in str(info.value)
    with pytest.raises(LungsoundError, match="fields \\['height'\\] are not known"):
        metadata_prompt({}, ["height"])


def tiny_tokenizer():
    """A byte-level BPE tokenizer of RoBERTa's kind (every byte a token, a few merges), made here."""
    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    for char in bytes_to_unicode().values():
        vocab[char] = len(vocab)
    merges = [("Ġ", "t"), ("Ġt", "h"), ("Ġth", "e"), ("e", "d"), ("Ġ", "p")]
    for a, b in merges:
        vocab[a + b] = len(vocab)
    return transformers.RobertaTokenizer(vocab=vocab, merges=merges)


def test_the_prompt_table_tokenises_as_the_tokenizer_does():
    tokenizer = tiny_tokenizer()
    table = PromptTokens.from_tokenizer(tokenizer)
    sentences = [metadata_prompt(m, f) for m, f, _ in PROMPTS]
    ids, mask = table.encode(sentences)
    want = tokenizer(sentences, padding="max_length", max_length=64, truncation=True, return_tensors="pt")
    torch.testing.assert_close(ids, want["input_ids"])
    torch.testing.assert_close(mask, want["attention_mask"])
    assert ids.shape == (len(sentences), 64) and int(ids[0, -1]) == 2  # cut to 64 tokens, ending in </s>
    assert PromptTokens.from_dict(table.to_dict()) == table
    with pytest.raises(LungsoundError, match="lacks the pieces"):
        PromptTokens.from_dict({**table.to_dict(), "table": {}})


def test_the_front_end_is_clap_s_feature_extractor_and_pads_an_8_s_cycle_to_1001_frames():
    rng = np.random.default_rng(0)
    waves = (0.1 * rng.standard_normal((2, 8 * 48000))).astype(np.float32)
    extractor = transformers.ClapFeatureExtractor(**FEATURE_EXTRACTOR)
    want = extractor(list(waves), sampling_rate=48000, return_tensors="np")["input_features"]
    front = ClapFrontEnd(FEATURE_EXTRACTOR)
    got = front(torch.from_numpy(waves)).numpy()
    assert got.shape == want.shape == (2, 1, 1001, 64)
    np.testing.assert_allclose(got, want, atol=2e-3)
    padded = front.pad(torch.from_numpy(waves[:1]))  # 8 s of sound, then 2 s of zeros (int(10 / 8) = 1 copy)
    assert padded.shape == (1, 480000) and bool((padded[0, 384000:] == 0).all())
    three = front.pad(torch.ones(1, 3 * 48000))  # a 3-s cycle: three copies, then 1 s of zeros
    assert int(three.sum()) == 9 * 48000 and bool((three[0, 9 * 48000:] == 0).all())
    with pytest.raises(LungsoundError, match="at most 10 s"):
        front(torch.zeros(1, 11 * 48000))


def test_clap_bts_head_reads_two_unit_norm_vectors_and_clap_audio_one(monkeypatch):
    torch.manual_seed(0)
    bts = create_model("clap_bts", overrides=TINY).eval()
    seen = []
    monkeypatch.setattr(bts.head, "forward", lambda z: seen.append(z) or torch.zeros(len(z), 4))
    x = 0.1 * torch.randn(3, 8 * 48000)
    bts(x, meta=[{"age": 70, "sex": "F", "location": "Pl", "device": "Meditron"}] * 3)
    (z,) = seen
    assert z.shape == (3, 32)
    torch.testing.assert_close(z[:, :16].norm(dim=1), torch.ones(3))  # text
    torch.testing.assert_close(z[:, 16:].norm(dim=1), torch.ones(3))  # audio
    audio = create_model("clap_audio", overrides=TINY).eval()
    assert audio.feature_dim == 16 and audio.head.in_features == 16 and not audio.uses_metadata
    assert model_spec("clap_bts").uses_metadata and model_spec("clap_bts").sample_rate == 48000
    assert not model_spec("clap_audio").uses_metadata


def test_the_metadata_changes_the_logits_and_the_sum_fusion_is_the_weighted_sum():
    torch.manual_seed(0)
    model = create_model("clap_bts", overrides=TINY).eval()
    x = 0.1 * torch.randn(2, 2 * 48000)
    with torch.no_grad():
        adult, child = (model(x, meta=[{"age": a, "sex": "M"}] * 2) for a in (70, 3))
        unknown = model(x)
    assert not torch.allclose(adult, child) and torch.allclose(unknown, model(x, meta=[{}, {}]))
    summed = create_model("clap_bts", overrides=TINY, fusion="sum", text_weight=0.25).eval()
    with torch.no_grad():
        text, audio = summed.embeddings(x)
        torch.testing.assert_close(summed.forward_features(x), 0.25 * text + 0.75 * audio)
    assert summed.head.in_features == 16


def test_training_time_field_drop_and_no_description():
    torch.manual_seed(0)
    model = create_model("clap_bts", overrides=TINY, meta_drop=1.0, meta_fields="age,device").train()
    full = {"age": 70, "sex": "F", "location": "Pl", "device": "Meditron"}
    got = set(model.prompts([full] * 50, 50))
    assert got == {f"{S} of an unknown patient, using a Meditron stethoscope.",
                   f"{S} of an adult patient, using an unknown stethoscope."}
    assert set(model.eval().prompts([full], 1)) == {f"{S} of an adult patient, using a Meditron stethoscope."}
    blank = create_model("clap_bts", overrides=TINY, no_description=True)
    assert blank.prompts([full, full], 2) == ["No description."] * 2
    with pytest.raises(LungsoundError, match="metadata for 1 samples but a batch of 2"):
        model.prompts([full], 2)


def test_clap_weights_load_from_a_save_pretrained_folder_with_its_tokenizer(tmp_path):
    torch.manual_seed(0)
    text = {**TINY["text_config"], "vocab_size": 300}
    hf = transformers.ClapModel(transformers.ClapConfig(text_config=text, audio_config=TINY["audio_config"],
                                                        projection_dim=16))
    hf.save_pretrained(tmp_path)
    tiny_tokenizer().save_pretrained(tmp_path)
    transformers.ClapFeatureExtractor(**{**FEATURE_EXTRACTOR, "frequency_min": 0}).save_pretrained(tmp_path)
    bts = create_model("clap_bts", weights=str(tmp_path))
    for key, value in hf.state_dict().items():
        torch.testing.assert_close(bts.backbone.state_dict()[key], value)
    assert bts.tokens == PromptTokens.from_tokenizer(tiny_tokenizer())
    assert bts.front.settings["frequency_min"] == 0  # the folder's preprocessor config wins
    audio = create_model("clap_audio", weights=str(tmp_path))
    torch.testing.assert_close(audio.backbone.audio_projection.linear1.weight, hf.audio_projection.linear1.weight)
    with pytest.raises(LungsoundError, match="config.json is missing"):
        create_model("clap_bts", weights=str(tmp_path / "nothing"))


def test_bind_metadata_hands_each_batch_its_rows_under_the_protocol_and_leaves_other_models_alone():
    from lungsound.data.sample_meta import SampleMeta
    from lungsound.models.conditioning import bind_metadata, call_model

    class Stub(torch.nn.Module):
        feature_dim = 3

        def forward_features(self, x, patch_hook=None, meta=None):
            self.seen = meta
            return x

        def forward(self, x, meta=None):
            self.seen = meta
            return x

    stub = Stub()
    assert bind_metadata(stub, [None], None) is stub
    record = SampleMeta(223, "223_1b1_Al_sc_Meditron", location="Al", device="Meditron",
                        extra={"patient_location": "Ll"})
    bound = bind_metadata(stub, [record, None], "paper")
    assert bound.feature_dim == 3
    bound.forward_features(torch.zeros(2, 1))
    assert stub.seen == [{"age": None, "sex": None, "location": "Ll", "device": "Meditron"},
                         {"age": None, "sex": None, "location": None, "device": None}]
    call_model(stub, torch.zeros(1, 1), [record], "clean")
    assert stub.seen == [{"age": None, "sex": None, "location": "Al", "device": "Meditron"}]
    bind_metadata(stub, None, "clean")(torch.zeros(1, 1))
    assert stub.seen is None  # a batch without records: the model reads every field as unknown


def test_the_published_checkpoint_refuses_offline_in_one_line():
    with pytest.raises(LungsoundError, match=r"cannot load CLAP 'laion/clap-htsat-unfused' .*pass the folder: "
                                             r"model.pretrained=/path/to/folder") as info:
        create_model("clap_bts", weights="default")
    assert "\n" not in str(info.value)
