"""Text from a sandbox is bounded and cleaned before prompts and records read it."""

from __future__ import annotations

from loop.scrub import HIDDEN_PATH, error_lines, scrub

ROOTS = ("/work/node", "/tmp")


def test_paths_outside_the_roots_are_replaced_and_their_quoted_source_dropped() -> None:
    text = (
        "Traceback (most recent call last):\n"
        '  File "/work/node/loop/worker.py", line 3, in run_job\n'
        "    module = load()\n"
        '  File "/etc/shadow", line 1, in <module>\n'
        "    root:$6$secret-hash:19000:0:99999:7:::\n"
        "    ^^^^\n"
        "OSError: cannot read /home/alice/.ssh/id_ed25519 or /tmp/x or /work/node/../../etc\n"
    )
    out = scrub(text, ROOTS)
    assert "secret-hash" not in out and "/etc/shadow" not in out and "alice" not in out
    assert f'File "{HIDDEN_PATH}", line 1' in out
    assert "/work/node/loop/worker.py" in out and "module = load()" in out and "/tmp/x" in out
    assert "../../etc" not in out  # a known root climbed out of is no known root
    assert "1/2" in scrub("ratio 1/2 of https://example.org/a", ROOTS)


def test_control_characters_and_escapes_are_removed_and_length_bounded() -> None:
    out = scrub("\x1b[2J\x1b]0;title\x07ok\x00\u202eevil\r\n" + "x" * 50_000, ROOTS, limit=1000)
    assert out.startswith("...") and len(out) <= 1003
    short = scrub("\x1b[2J\x1b]0;title\x07ok\x00\u202eevil", ROOTS)
    assert short == "okevil"


def test_error_lines_keep_tracebacks_and_errors_and_count_the_rest() -> None:
    text = "\n".join(
        [
            *(f"step {n} data {n * 7}" for n in range(100)),
            "UserWarning: slow path",
            "Traceback (most recent call last):",
            '  File "/tmp/candidate.py", line 4, in <module>',
            "    boom()",
            "RuntimeError: first line",
            "second line of the message",
            "",
            "step 101 data 707",
        ]
    )
    out = error_lines(text)
    assert "step 5 data" not in out and "step 101" not in out
    assert "UserWarning: slow path" in out and "second line of the message" in out
    assert "[101 other output line(s) left out]" in out
