"""Read hospital table exports whatever their container and encoding; write tables as UTF-8 CSV.

Chinese hospital systems export tables as GBK/GB18030 CSV (often CRLF, sometimes tab-separated),
UTF-8 with or without BOM, or ``.xlsx``. :func:`read_table_file` recognises the container by
content (Parquet, ``.xlsx``, legacy ``.xls``, text), detects a text table's encoding and delimiter,
and returns an Arrow table whose text is UTF-8 with every text or workbook cell as a string (no type
inference: ``00123`` stays ``00123``). :func:`write_csv_utf8` is the one way tables leave as CSV.

How GB18030 is recognised (:func:`detect_encoding`). GB18030 decodes most byte sequences without
error, so "it decodes" proves little: cp1252 ``Renée`` and Shift-JIS Japanese both decode into
nonsense ideographs. charset-normalizer cannot settle it on the short tables hospitals export:
measured with charset-normalizer 3.5.2 on GBK tables of our shape, one to three rows of names were
reported as big5, cp949, shift_jis_2004 or euc_jis_2004, a one-row table even as utf_16_be, and a
table whose only Chinese column is 性别 (男/女) as cp949 (Hangul) at every length from 10 to 300 rows;
Shift-JIS Japanese came back as cp932 with CJK alphabets, so "its alphabets are CJK" would accept it.
The rule used instead looks at what the GB18030 decoding produces, over the whole file: at least
half of the non-ASCII characters must be common Chinese text, i.e. ideographs of GB2312 (the 6,763
everyday hanzi) or CJK/full-width punctuation. Rarer name characters (玥, 喆, 堃: GBK/GB18030 only)
are allowed up to that share. Measured: real GBK tables score 0.75–1.0 (0.75 with a rare character
in every name); cp1252/Latin-1 text scores 0 (its accented letters pair with the next ASCII byte
into GBK-extension ideographs); Shift-JIS about 0.14 and Big5 about 0.40 (uniform over all their
characters; about 0.01 for their most frequent ones). charset-normalizer only names the encoding in
a refusal. Known limit: EUC-KR and EUC-JP share GB2312's byte layout, so a table holding only Hangul
or kanji in those encodings cannot be told from GB2312 by its bytes; no Chinese hospital system
exports them.
"""

from __future__ import annotations

import codecs
import csv
import datetime as dt
import io
import re
import warnings
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NoReturn

import charset_normalizer
import openpyxl
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from seqlife.exceptions import TableDecodeError

DEFAULT_ENCODINGS = ("utf-8", "gb18030")
CHUNK = 1 << 20  # 1 MiB: whole-file decoding checks run in constant memory
SNIFF_BYTES = 1 << 16  # the first 64 KiB are enough to see the header and a few rows
SNIFF_ROWS = 20
DELIMITERS = (",", "\t", ";", "|")
#: Least share of non-ASCII characters that must be common Chinese text to accept GB18030.
GB_COMMON_SHARE = 0.5
GB_FAMILY = frozenset({"gb18030", "gbk", "gb2312", "hz"})

_PARQUET_MAGIC = b"PAR1"
_ZIP_MAGIC = b"PK\x03\x04"
_OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
_HAN = re.compile("[\u4e00-\u9fff]+")
_CJK_PUNCTUATION = re.compile("[\u3000-\u303f\uff01-\uff5e\u00b7\u2014\u2018\u2019\u201c\u201d\u2026]")
_DELIMITER_NAMES = {",": "comma", "\t": "tab", ";": "semicolon", "|": "vertical bar"}


# --- encodings -------------------------------------------------------------------------------


def detect_encoding(path: Path, label: str, accepted: Sequence[str]) -> str:
    """Name the codec a text table is written in, from its whole content.

    Args:
        path: the file to examine; read in 1 MiB chunks, so memory stays constant.
        label: how the file is named in messages (never its content).
        accepted: codec names the policy accepts (``table_encodings`` in the collect policy).

    Returns:
        ``"utf-8"``, ``"utf-8-sig"`` (UTF-8 starting with a BOM), ``"gb18030"``, or ``"utf-16"``
        when that is accepted and the file starts with a UTF-16 BOM.

    Raises:
        TableDecodeError: the content is in none of the accepted encodings; the message names the
            encoding it looks like.
    """
    wanted = {codecs.lookup(name).name for name in accepted}
    with open(path, "rb") as handle:
        head = handle.read(4)
    if head.startswith(_UTF16_BOMS):
        if "utf-16" in wanted:
            return "utf-16"
        _refuse_encoding(path, label, accepted, 0)
    if "utf-8" in wanted:
        bad_at = _first_undecodable(path, "utf-8")
        if bad_at is None:
            return "utf-8-sig" if head.startswith(codecs.BOM_UTF8) else "utf-8"
    else:
        bad_at = 0
    if "gb18030" in wanted:
        counts = _chinese_counts(path)
        if counts is not None and counts[0] >= GB_COMMON_SHARE * counts[1]:
            return "gb18030"  # (plain ASCII passes too: it is valid GB18030)
    _refuse_encoding(path, label, accepted, bad_at or 0)


def _first_undecodable(path: Path, encoding: str) -> int | None:
    """Offset near the first byte that does not decode strictly (or is NUL), or None if all do."""
    decoder = codecs.getincrementaldecoder(encoding)(errors="strict")
    offset = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            if b"\x00" in chunk:  # no text table holds NUL: UTF-16/32 or binary data
                return offset + chunk.index(b"\x00")
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as exc:
                return max(0, offset + exc.start - len(decoder.getstate()[0]))
            offset += len(chunk)
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            return offset
    return None


def _chinese_counts(path: Path) -> tuple[int, int] | None:
    """(common Chinese characters, non-ASCII characters) of the file decoded as GB18030.

    None when the file does not decode strictly as GB18030 or holds a NUL byte.
    """
    decoder = codecs.getincrementaldecoder("gb18030")(errors="strict")
    common = non_ascii = 0
    with open(path, "rb") as handle:
        while True:
            chunk = handle.read(CHUNK)
            if b"\x00" in chunk:
                return None
            try:
                text = decoder.decode(chunk, final=not chunk)
            except UnicodeDecodeError:
                return None
            ascii_count = len(text.encode("ascii", "ignore"))
            non_ascii += len(text) - ascii_count
            hanzi = "".join(_HAN.findall(text))
            common += len(hanzi.encode("gb2312", "ignore")) // 2
            common += len(_CJK_PUNCTUATION.findall(text))
            if not chunk:
                return common, non_ascii


def _refuse_encoding(path: Path, label: str, accepted: Sequence[str], near: int) -> NoReturn:
    names = ", ".join(accepted)
    remedy = " or ".join(name.upper() for name in accepted)
    raise TableDecodeError(
        label,
        f"not UTF-8; looks like {_guess_encoding(path, near)}; accepted encodings: {names}",
        f"Re-export the table as {remedy}.",
    )


def _guess_encoding(path: Path, near: int) -> str:
    """charset-normalizer's name for about 1 MiB of whole lines around the first undecodable byte.

    The sample starts at the line before ``near`` so that a file whose first megabytes are plain
    ASCII is judged on the part that is not.
    """
    with open(path, "rb") as handle:
        start = max(0, near - (CHUNK // 2))
        handle.seek(start)
        sample = handle.read(CHUNK)
    if start:
        sample = sample[sample.find(b"\n") + 1:]
    if len(sample) == CHUNK and b"\n" in sample:
        sample = sample[: sample.rfind(b"\n") + 1]
    best = charset_normalizer.from_bytes(sample).best()
    if best is None:
        return "binary data, not text"
    if best.encoding in GB_FAMILY:  # decodes as GB18030, but the text is not Chinese
        return "an unknown encoding (it decodes as GB18030 but reads as nonsense)"
    language = best.language
    return best.encoding + (f" ({language})" if language and language != "Unknown" else "")


# --- reading ---------------------------------------------------------------------------------


def read_table_file(
    path: Path, label: str, accepted_encodings: Sequence[str] = DEFAULT_ENCODINGS
) -> pa.Table:
    """Read a hospital table export, recognised by content: Parquet, ``.xlsx`` or delimited text.

    Parquet keeps its types. Text and workbook cells all become strings (``None`` for an empty
    cell); workbook dates become ``YYYY-MM-DD`` (plus `` HH:MM:SS`` when not midnight) and
    integral numbers lose their ``.0``. Column names are stripped of whitespace and BOM.

    Args:
        path: the file to read.
        label: how the file is named in messages.
        accepted_encodings: codecs a text table may be written in.

    Returns:
        The table; its text is UTF-8 whatever the file's encoding.

    Raises:
        TableDecodeError: the container, encoding or layout is not accepted (legacy ``.xls``,
            damaged workbook, several sheets with data, unnamed or duplicate column, a row with
            the wrong number of fields, empty file). Messages name positions, never cell values.
    """
    with open(path, "rb") as handle:
        head = handle.read(8)
    if not head:
        raise TableDecodeError(label, "the file is empty (no header row)",
                               "Re-export the table with its header row.")
    if head.startswith(_PARQUET_MAGIC):
        table = _read_parquet(path, label)
    elif head.startswith(_ZIP_MAGIC):
        table = _read_xlsx(path, label)
    elif head.startswith(_OLE_MAGIC):
        raise TableDecodeError(label, "legacy Excel (.xls); save it as .xlsx or CSV",
                               "Excel and WPS both do this with Save As; deliver that copy.")
    else:
        table = _read_text(path, label, accepted_encodings)
    return table


def _read_parquet(path: Path, label: str) -> pa.Table:
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError):
        raise TableDecodeError(label, "not a readable Parquet file (damaged or truncated)",
                               "Replace it with a complete copy.") from None
    names = _check_header(label, table.column_names)
    return table.rename_columns(names)


def _check_header(label: str, raw_names: Sequence[str | None]) -> list[str]:
    """Strip the column names and refuse empty or duplicate ones, naming positions only."""
    names = [(name or "").strip().strip("\ufeff").strip() for name in raw_names]
    for position, name in enumerate(names, start=1):
        if not name:
            raise TableDecodeError(label, f"column {position} of the header has no name",
                                   "Give every column a name in the header row and export again.")
    first_seen: dict[str, int] = {}
    for position, name in enumerate(names, start=1):
        if name in first_seen:
            raise TableDecodeError(
                label, f"columns {first_seen[name]} and {position} of the header have the same name",
                "Give every column a distinct name and export again.")
        first_seen[name] = position
    return names


# --- delimited text --------------------------------------------------------------------------


def _read_text(path: Path, label: str, accepted: Sequence[str]) -> pa.Table:
    encoding = detect_encoding(path, label, accepted)
    delimiter, width = _sniff_delimiter(path, encoding)
    column_ids = [f"c{i}" for i in range(width)]
    bad_rows: list[tuple[int | None, int]] = []

    def on_invalid_row(row: Any) -> str:
        bad_rows.append((row.number, row.actual_columns))
        return "error"

    try:
        table = pacsv.read_csv(
            path,
            read_options=pacsv.ReadOptions(
                encoding="utf8" if encoding in ("utf-8", "utf-8-sig") else encoding,
                column_names=column_ids,  # the header is read as a row: no inference anywhere
                use_threads=False,  # so that a bad row is reported with its number
            ),
            parse_options=pacsv.ParseOptions(
                delimiter=delimiter, newlines_in_values=True, invalid_row_handler=on_invalid_row),
            convert_options=pacsv.ConvertOptions(
                column_types={column: pa.string() for column in column_ids},
                strings_can_be_null=True, quoted_strings_can_be_null=True, null_values=[""]),
        )
    except (pa.ArrowException, OSError, UnicodeError):
        # pyarrow's messages quote the offending row: never pass them on.
        if bad_rows:
            number, fields = bad_rows[0]
            where = f"row {number}" if number is not None else "a row"
            raise TableDecodeError(
                label,
                f"{where} (counting the header as row 1) has {fields} fields, the header has "
                f"{width} ({_DELIMITER_NAMES[delimiter]}-separated)",
                "Quote fields that contain the delimiter or a line break and export again.",
            ) from None
        raise TableDecodeError(label, "the text table could not be parsed (unbalanced quotes or "
                               "an over-long row)", "Export the table again.") from None
    if table.num_rows == 0:
        raise TableDecodeError(label, "the file holds no header row",
                               "Re-export the table with its header row.")
    names = _check_header(label, [table.column(i)[0].as_py() for i in range(width)])
    return table.slice(1).rename_columns(names)


def _sniff_delimiter(path: Path, encoding: str) -> tuple[str, int]:
    """Pick the delimiter that splits the header into the most fields, consistently over rows.

    Candidates that split the header at all are ranked by the share of the first rows that have
    as many fields as the header, then by the header's width; a one-column table takes the first
    candidate its rows agree with. Returns the delimiter and the header's number of fields.
    """
    with open(path, "rb") as handle:
        raw = handle.read(SNIFF_BYTES)
        at_end = not handle.read(1)
    text = codecs.getincrementaldecoder(encoding)(errors="replace").decode(raw, final=at_end)
    text = text.lstrip("\ufeff")
    scores: list[tuple[bool, float, int, int, str]] = []
    for rank, delimiter in enumerate(DELIMITERS):
        counts = _field_counts(text, delimiter, complete=at_end)
        if not counts:
            continue
        width = counts[0]
        agreeing = sum(count == width for count in counts) / len(counts)
        scores.append((width > 1, agreeing, width, -rank, delimiter))
    if not scores:
        return ",", 1
    *_, width, _, delimiter = max(scores)
    return delimiter, width


def _field_counts(text: str, delimiter: str, complete: bool) -> list[int]:
    """Field counts of the first non-empty records of ``text`` read with ``delimiter``."""
    counts: list[int] = []
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, quotechar='"',
                        doublequote=True, strict=False)
    try:
        for record in reader:
            if record:
                counts.append(len(record))
            if len(counts) > SNIFF_ROWS:
                break
    except csv.Error:
        pass
    if not complete and len(counts) > 1:
        counts.pop()  # the sample may end inside the last record
    return counts


# --- workbooks -------------------------------------------------------------------------------


def _read_xlsx(path: Path, label: str) -> pa.Table:
    try:
        with zipfile.ZipFile(path) as archive:
            is_workbook = "xl/workbook.xml" in archive.namelist()
    except (zipfile.BadZipFile, OSError, ValueError):
        raise TableDecodeError(label, "damaged or truncated .xlsx (zip) file",
                               "Replace it with a complete copy.") from None
    if not is_workbook:
        raise TableDecodeError(label, "a zip archive that is not an Excel workbook",
                               "Deliver the table itself as .xlsx or CSV.")
    try:
        # A file object, not the path: openpyxl would judge the file by its name's suffix.
        with warnings.catch_warnings(), open(path, "rb") as handle:
            warnings.simplefilter("ignore")  # openpyxl warns about styles and extensions
            workbook = openpyxl.load_workbook(handle, read_only=True, data_only=True)
            try:
                rows = _only_sheet_rows(label, workbook)
            finally:
                workbook.close()
    except TableDecodeError:
        raise
    except Exception:  # noqa: BLE001 — a third-party parser on untrusted bytes: any failure
        # (zip, XML, KeyError on a missing part, ...) means the workbook is unreadable.
        raise TableDecodeError(label, "damaged .xlsx workbook (its parts cannot be read)",
                               "Open it in Excel or WPS, save it again and deliver the copy."
                               ) from None
    return _rows_to_table(label, rows)


def _only_sheet_rows(label: str, workbook: Any) -> list[tuple[int, list[str | None]]]:
    """The non-empty rows (Excel row number, cell texts) of the one worksheet that holds data."""
    rows: list[tuple[int, list[str | None]]] = []
    with_data: list[str] = []
    for sheet in workbook.worksheets:
        sheet.reset_dimensions()  # exporters often write a wrong <dimension>; read what is there
        if not with_data:
            rows = list(_sheet_rows(sheet))
            if rows:
                with_data.append(sheet.title)
        elif next(_sheet_rows(sheet), None) is not None:  # stops at the first value
            with_data.append(sheet.title)
    if len(with_data) > 1:
        raise TableDecodeError(
            label, f"{len(with_data)} worksheets hold data ({', '.join(with_data)})",
            "Deliver one table per file: keep one sheet per workbook, or export each as CSV.")
    if not rows:
        raise TableDecodeError(label, "the workbook holds no data (no header row)",
                               "Re-export the table with its header row.")
    return rows


def _sheet_rows(sheet: Any) -> Iterator[tuple[int, list[str | None]]]:
    """Yield (Excel row number, cell texts) for each row with at least one value."""
    for number, values in enumerate(sheet.iter_rows(values_only=True), start=1):
        cells = [_cell_text(value) for value in values]
        if any(cell is not None for cell in cells):
            yield number, cells


def _cell_text(value: object) -> str | None:
    """Workbook cell → text: ISO dates, integral numbers without ``.0``, ``None`` when empty."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dt.datetime):
        if value.time() == dt.time(0):
            return value.date().isoformat()
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, (dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e16:
            return str(int(value))
        return repr(value)
    text = str(value).strip()
    return text or None


def _rows_to_table(label: str, rows: list[tuple[int, list[str | None]]]) -> pa.Table:
    header_number, header = rows[0]
    data = rows[1:]
    width = max(len(cells) for _, cells in rows)
    # Drop columns that are empty in the header and in every row (a table not starting at A1,
    # formatted but empty cells to the right); a named column is never dropped.
    keep = [index for index in range(width)
            if (index < len(header) and header[index] is not None)
            or any(index < len(cells) and cells[index] is not None for _, cells in data)]
    for index in keep:
        if index >= len(header) or header[index] is None:
            first = next(number for number, cells in data
                         if index < len(cells) and cells[index] is not None)
            raise TableDecodeError(
                label,
                f"row {first} has a value in column {_column_letter(index)}, which has no name in "
                f"the header (row {header_number})",
                "Give every column a name in the header row, or remove the stray cells, and "
                "export again.")
    names = _check_header(label, [header[index] for index in keep])
    columns: list[list[str | None]] = [[] for _ in keep]
    for _, cells in data:
        for position, index in enumerate(keep):
            columns[position].append(cells[index] if index < len(cells) else None)
    return pa.table([pa.array(column, type=pa.string()) for column in columns], names=names)


def _column_letter(index: int) -> str:
    return openpyxl.utils.get_column_letter(index + 1)


# --- writing ---------------------------------------------------------------------------------


def write_csv_utf8(table: pa.Table, path: Path) -> None:
    """Write ``table`` as CSV: UTF-8 without BOM, LF line ends, header first.

    Cells are written as they are (a leading ``=``, ``+``, ``-`` or ``@`` is kept; formula
    neutralising belongs to the stage that shares data). Every CSV seqlife writes goes through here.
    """
    pacsv.write_csv(table, path, write_options=pacsv.WriteOptions(include_header=True))
