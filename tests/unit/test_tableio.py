"""Reading hospital table exports (GB/T 39725 §11.3.4.4 a): GBK/GB18030 or UTF-8 text, tab or
comma, CRLF or LF, and .xlsx, recognised by content; everything comes back as UTF-8 strings, and
anything else is refused with a typed, steward-readable message that never quotes a cell.

The property tests build tables unlike ``seqlife.synth``'s: random column names (pinyin, Chinese,
any Unicode letters), random order, cells with Chinese, commas, quotes, line breaks and blanks,
written in a random encoding, line ending and delimiter, or as a workbook with real dates and
numbers. The fixtures in ``tests/data/hospital/`` were typed by hand (see its README).
"""

from __future__ import annotations

import codecs
import csv
import datetime as dt
import io
import os
import string
import tempfile
import zipfile
from pathlib import Path

import openpyxl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from seqlife.collect import load_collect_policy
from seqlife.exceptions import CollectError, TableDecodeError
from seqlife.tableio import DEFAULT_ENCODINGS, detect_encoding, read_table_file, write_csv_utf8

HOSPITAL = Path(__file__).resolve().parents[1] / "data" / "hospital"
PROPERTY = settings(max_examples=int(os.environ.get("SEQLIFE_FUZZ_EXAMPLES", "60")), deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow])

#: GB2312 level-1 hanzi, the 3,755 everyday characters (rows 16-55), decoded from their codes.
HANZI = "".join(
    bytes([lead, trail]).decode("gb2312")
    for lead in range(0xB0, 0xD8) for trail in range(0xA1, 0xFF)
    if not (lead == 0xD7 and trail > 0xF9))
PINYIN_NAMES = ["xingming", "sfzh", "lxdh", "csrq", "xb", "zyh", "mzh", "ryrq", "cyrq", "zd",
                "xzz", "gzdw", "hyzk", "mz", "zy", "gms"]
CHINESE_NAMES = ["姓名", "性别", "出生日期", "现住址", "身份证号", "联系电话", "住院号", "诊断",
                 "入院日期", "出院日期", "民族", "职业", "婚姻状况", "工作单位", "过敏史"]
CELL_ASCII = string.ascii_letters + string.digits + ' ,"\n-/.:'
TEXT_ENCODINGS = ["utf-8", "utf-8-sig", "gbk", "gb18030"]

# Strategies are built once: hypothesis spends its time on large alphabets when rebuilt per draw.
_HANZI = st.sampled_from(HANZI)
_CELL_ASCII = st.sampled_from(CELL_ASCII)
_ANY_LETTER = st.characters(categories=["L"])
_NAME_LISTS = st.sampled_from(PINYIN_NAMES) | st.sampled_from(CHINESE_NAMES)
#: Column names and cells for GB-encoded tables (Chinese and ASCII) and for UTF-8 (any letter).
_NAMES = {
    chinese: _NAME_LISTS | st.text(_HANZI, min_size=1, max_size=4)
    | st.text(_HANZI if chinese else _ANY_LETTER, min_size=1, max_size=6)
    for chinese in (True, False)}
_CELLS = {
    chinese: st.none() | st.text(_CELL_ASCII | _HANZI | (_HANZI if chinese else _ANY_LETTER),
                                 min_size=1, max_size=12)
    for chinese in (True, False)}


def refused(path: Path, *planted: str) -> str:
    """Read ``path`` expecting a refusal; check no planted value leaks; return the message."""
    with pytest.raises(TableDecodeError) as caught:
        read_table_file(path, "delivery/" + path.name)
    message = caught.value.message
    assert message.startswith(f"delivery/{path.name}: ")
    assert str(caught.value) == message
    for value in planted:
        assert value not in message
    return message


# --- properties ------------------------------------------------------------------------------


@st.composite
def text_tables(draw: st.DrawFn) -> tuple[str, str, str, list[str], list[list[str | None]]]:
    """(encoding, line ending, delimiter, column names, rows) for a delimited text export."""
    encoding = draw(st.sampled_from(TEXT_ENCODINGS))
    chinese = encoding in ("gbk", "gb18030")  # GB exports hold Chinese, not any script
    names = draw(st.lists(_NAMES[chinese], min_size=1, max_size=6, unique=True))
    row = st.lists(_CELLS[chinese], min_size=len(names), max_size=len(names))
    rows = draw(st.lists(row, max_size=8))
    return (encoding, draw(st.sampled_from(["\n", "\r\n"])), draw(st.sampled_from([",", "\t"])),
            names, rows)


@PROPERTY
@given(table=text_tables())
def test_read_table_file_returns_what_a_text_export_holds(table) -> None:
    encoding, newline, delimiter, names, rows = table
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, delimiter=delimiter, lineterminator=newline)
    writer.writerow(names)
    writer.writerows([["" if cell is None else cell for cell in row] for row in rows])
    payload = buffer.getvalue().encode(encoding)
    if encoding in ("gbk", "gb18030"):
        # A few hanzi can form valid UTF-8 by chance; such bytes are read as UTF-8, by design.
        try:
            assume(payload.decode("utf-8") == buffer.getvalue())
        except UnicodeDecodeError:
            pass
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "export.dat"
        path.write_bytes(payload)
        result = read_table_file(path, "export")
    assert result.column_names == names
    assert all(field.type == pa.string() for field in result.schema)
    assert result.to_pydict() == {name: [row[i] for row in rows] for i, name in enumerate(names)}


def _excel_cells() -> st.SearchStrategy[tuple[object, str | None]]:
    """A workbook cell value and the text read_table_file must give for it."""
    text = st.text(_CELL_ASCII | _HANZI, max_size=10)
    day = st.dates(min_value=dt.date(1900, 3, 1), max_value=dt.date(2099, 12, 31))
    moment = st.datetimes(min_value=dt.datetime(1900, 3, 1), max_value=dt.datetime(2099, 12, 31)
                          ).map(lambda d: d.replace(microsecond=0)).filter(lambda d: d.time() != dt.time(0))
    decimal = st.tuples(st.integers(-10**9, 10**9), st.integers(1, 6)).map(
        lambda p: float(f"{p[0]}e-{p[1]}")).filter(lambda x: not x.is_integer())
    return st.one_of(
        st.just((None, None)),
        text.map(lambda t: (t or None, t.strip() or None)),
        st.integers(-10**15, 10**15).map(lambda i: (i, str(i))),
        st.integers(-10**15, 10**15).map(lambda i: (float(i), str(i))),  # 100080.0 → "100080"
        decimal.map(lambda x: (x, repr(x))),
        day.map(lambda d: (dt.datetime.combine(d, dt.time(0)), d.isoformat())),
        moment.map(lambda d: (d, d.strftime("%Y-%m-%d %H:%M:%S"))),
        st.booleans().map(lambda b: (b, "true" if b else "false")),
    )


EXCEL_CELLS = _excel_cells()


@PROPERTY
@given(data=st.data())
def test_read_table_file_returns_what_a_workbook_holds(data: st.DataObject) -> None:
    names = data.draw(st.lists(_NAMES[False], min_size=1, max_size=6, unique=True))
    rows = data.draw(st.lists(st.lists(EXCEL_CELLS, min_size=len(names), max_size=len(names)),
                              max_size=8))
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet.append(names)
    for row in rows:
        sheet.append([value for value, _ in row])
    # A row with no value at all does not exist in a workbook; the reader skips it.
    expected = [[text for _, text in row] for row in rows if any(text for _, text in row)]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "export.bin"
        workbook.save(path)
        result = read_table_file(path, "export")
    assert result.column_names == names
    assert result.to_pydict() == {n: [row[i] for row in expected] for i, n in enumerate(names)}


# --- hand-made hospital exports --------------------------------------------------------------


def test_read_table_file_gbk_crlf_export() -> None:
    path = HOSPITAL / "zy_export_gbk.csv"
    assert detect_encoding(path, path.name, DEFAULT_ENCODINGS) == "gb18030"
    table = read_table_file(path, path.name)
    assert table.column_names == ["住院号", "姓名", "性别", "出生日期", "入院日期", "出院日期",
                                  "诊断", "现住址", "联系电话"]
    assert table.num_rows == 6
    columns = table.to_pydict()
    assert columns["姓名"] == ["王建国", "李玥", "张淑珍", "陈喆", "刘桂英", "赵志强"]
    assert columns["出生日期"][0] == "1956/3/7"
    assert columns["现住址"][1] == "上海市徐汇区漕溪北路88号,7楼"
    assert columns["诊断"][4] == "原发性高血压3级,极高危"
    assert columns["联系电话"][1:3] == ["021-64381234", None]
    assert columns["出院日期"][2] is None


def test_read_table_file_utf8_bom_tab_export() -> None:
    path = HOSPITAL / "zy_export_utf8bom_tab.txt"
    assert detect_encoding(path, path.name, DEFAULT_ENCODINGS) == "utf-8-sig"
    table = read_table_file(path, path.name)
    assert table.column_names == ["zyh", "xm", "xb", "csrq", "ryrq", "cyrq", "zd", "xzz", "lxdh"]
    columns = table.to_pydict()
    assert columns["zyh"] == ["00031257", "00031260", "00031266", "00031271"]  # zeros kept
    assert columns["zd"][1] == "右桡骨远端骨折\n已行切开复位内固定"
    assert columns["lxdh"][1] is None and columns["cyrq"][2] is None
    assert columns["csrq"][2] == "1944-02-29"


def test_read_table_file_xlsx_export() -> None:
    table = read_table_file(HOSPITAL / "lab_export.xlsx", "lab_export.xlsx")
    assert table.column_names == ["PatientID", "Name", "Sex", "DOB", "SampleTime", "HbA1c_pct",
                                  "Phone", "Fasting", "Note"]
    assert table.to_pylist() == [
        {"PatientID": "P-0007", "Name": "Wang Fang", "Sex": "F", "DOB": "1956-03-07",
         "SampleTime": "2024-02-01 08:15:00", "HbA1c_pct": "7.2", "Phone": "13812345678",
         "Fasting": "true", "Note": None},
        {"PatientID": "P-0012", "Name": "Li Qiang", "Sex": "M", "DOB": "1979-11-23",
         "SampleTime": "2024-02-01 09:40:30", "HbA1c_pct": "6", "Phone": "13698765432",
         "Fasting": "false", "Note": "repeat test"},
        {"PatientID": "P-0015", "Name": "Zhao Min", "Sex": "F", "DOB": "2002-01-09",
         "SampleTime": "2024-02-02", "HbA1c_pct": "5.45", "Phone": None, "Fasting": "true",
         "Note": "溶血"},
    ]


# --- encodings -------------------------------------------------------------------------------


def test_policy_names_the_encodings_the_reader_accepts_by_default() -> None:
    policy = load_collect_policy()
    assert tuple(policy["table_encodings"]) == DEFAULT_ENCODINGS
    assert policy.clause("table_encodings") == "GB/T 39725 §11.3.4.4 a"


def test_when_table_is_cp1252_then_refused_without_quoting_it(tmp_path: Path) -> None:
    path = tmp_path / "patients.csv"
    path.write_bytes("nom,prénom,ville\r\nDupont,Renée,Orléans\r\nMüller,Jürgen,Zürich\r\n"
                     "Garçon,François,Besançon\r\n".encode("cp1252"))
    message = refused(path, "Renée", "Orléans", "Müller", "Zürich", "François", "Dupont", "nom")
    assert "not UTF-8; looks like " in message
    assert message.endswith(
        "; accepted encodings: utf-8, gb18030. Re-export the table as UTF-8 or GB18030.")
    assert "GB18030 but" not in message  # named for what it is, not for what it decodes as


def test_when_table_is_shift_jis_then_refused(tmp_path: Path) -> None:
    path = tmp_path / "patients.csv"
    path.write_bytes("氏名,フリガナ,住所\n山田太郎,ヤマダタロウ,東京都新宿区西新宿2-8-1\n"
                     "佐藤花子,サトウハナコ,大阪府大阪市北区梅田1-1\n".encode("shift_jis"))
    message = refused(path, "山田", "東京", "佐藤")
    assert "not UTF-8" in message and "cp932" in message


def test_when_table_is_big5_then_refused(tmp_path: Path) -> None:
    path = tmp_path / "patients.csv"
    path.write_bytes("姓名,性別,地址\n陳大文,男,臺北市中正區重慶南路一段122號\n"
                     "林美玲,女,高雄市前金區中正四路211號\n".encode("big5"))
    assert "looks like big5" in refused(path, "陳大文", "臺北")


@pytest.mark.parametrize("codec", ["utf-16", "utf-16-le", "utf-16-be"])
def test_when_table_is_utf16_then_refused(tmp_path: Path, codec: str) -> None:
    path = tmp_path / "patients.csv"
    path.write_bytes("xm,xb\n张伟,男\n".encode(codec))
    assert "not UTF-8; looks like utf_16" in refused(path, "张伟")


def test_when_utf16_is_accepted_then_read(tmp_path: Path) -> None:
    path = tmp_path / "patients.csv"
    path.write_bytes("xm,xb\r\n张伟,男\r\n".encode("utf-16"))
    table = read_table_file(path, "p", accepted_encodings=("utf-8", "gb18030", "utf-16"))
    assert table.to_pylist() == [{"xm": "张伟", "xb": "男"}]


def test_when_gbk_table_has_rare_name_characters_then_read(tmp_path: Path) -> None:
    """Characters outside GB2312 (玥, 喆, 堃, 珺: GBK only) are common in given names."""
    path = tmp_path / "names.csv"
    rows = "姓名,性别\r\n李玥,女\r\n王喆,男\r\n张堃,男\r\n刘珺,女\r\n"
    path.write_bytes(rows.encode("gbk"))
    assert read_table_file(path, "names").column("姓名").to_pylist() == ["李玥", "王喆", "张堃",
                                                                       "刘珺"]


def test_when_gbk_table_has_chinese_only_past_the_first_mebibyte_then_read(tmp_path: Path) -> None:
    """Detection reads the whole file (in constant memory), not a sample of its head."""
    path = tmp_path / "big.csv"
    ascii_rows = [f"ZY{i:08d},patient{i},M,1970/1/1" for i in range(40_000)]
    chinese_rows = [f"ZY{i:08d},王建国{i % 97},男,1956/3/7" for i in range(40_000, 160_000)]
    text = "\r\n".join(["zyh,xm,xb,csrq", *ascii_rows, *chinese_rows]) + "\r\n"
    path.write_bytes(text.encode("gbk"))
    assert path.stat().st_size > 5_000_000
    assert text.encode("gbk")[: 1 << 20].isascii()
    assert detect_encoding(path, "big", DEFAULT_ENCODINGS) == "gb18030"
    table = read_table_file(path, "big")
    assert table.num_rows == 160_000
    assert table.column("xm")[40_000].as_py() == "王建国" + str(40_000 % 97)
    assert table.column("xb")[-1].as_py() == "男"


@pytest.mark.parametrize(("content", "codec", "expected"), [
    ("a,b\n1,2\n", "utf-8", "utf-8"),
    ("姓名\n张三\n", "utf-8", "utf-8"),
    ("\ufeff姓名\n张三\n", "utf-8", "utf-8-sig"),
    ("姓名,现住址\n张三,北京市朝阳区\n", "gb18030", "gb18030"),
])
def test_detect_encoding(tmp_path: Path, content: str, codec: str, expected: str) -> None:
    path = tmp_path / "t.csv"
    path.write_bytes(content.encode(codec))
    assert detect_encoding(path, "t", DEFAULT_ENCODINGS) == expected


def test_when_gb18030_is_not_accepted_then_gbk_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_bytes("姓名,现住址\n张三,北京市朝阳区\n".encode("gbk"))
    with pytest.raises(TableDecodeError, match="accepted encodings: utf-8. Re-export the table "
                                               "as UTF-8."):
        detect_encoding(path, "t", ["utf-8"])


# --- containers ------------------------------------------------------------------------------


def test_when_file_is_legacy_xls_then_refused_whatever_its_name(tmp_path: Path) -> None:
    path = tmp_path / "patients.csv"
    path.write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(504))
    assert "legacy Excel (.xls); save it as .xlsx or CSV" in refused(path)


def test_when_xlsx_is_truncated_then_refused(tmp_path: Path) -> None:
    source = tmp_path / "whole.xlsx"
    workbook = openpyxl.Workbook()
    workbook.active.append(["xm", "sfzh"])
    workbook.active.append(["王秀英", "110101195603070028"])
    workbook.save(source)
    path = tmp_path / "cut.xlsx"
    path.write_bytes(source.read_bytes()[: source.stat().st_size // 2])
    assert "damaged or truncated .xlsx" in refused(path, "王秀英", "110101195603070028")


def test_when_xlsx_part_is_corrupt_then_refused(tmp_path: Path) -> None:
    path = tmp_path / "broken.xlsx"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        archive.writestr("xl/workbook.xml", "<workbook><sheets><sheet 王秀英")
    assert "damaged .xlsx workbook" in refused(path, "王秀英")


def test_when_zip_is_not_a_workbook_then_refused(tmp_path: Path) -> None:
    path = tmp_path / "export.xlsx"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("patients.csv", "xm\n王秀英\n")
    assert "not an Excel workbook" in refused(path, "王秀英")


def test_when_several_sheets_hold_data_then_refused_naming_them(tmp_path: Path) -> None:
    workbook = openpyxl.Workbook()
    workbook.active.title = "住院"
    workbook.active.append(["xm"])
    workbook.active.append(["王秀英"])
    workbook.create_sheet("空白")
    workbook.create_sheet("门诊").append(["xm"])
    workbook.create_sheet("备注")["C9"] = "张伟"
    path = tmp_path / "export.xlsx"
    workbook.save(path)
    message = refused(path, "王秀英", "张伟")
    assert "3 worksheets hold data (住院, 门诊, 备注)" in message
    assert "one table per file" in message


def test_when_only_a_later_sheet_holds_data_then_it_is_read(tmp_path: Path) -> None:
    workbook = openpyxl.Workbook()
    sheet = workbook.create_sheet("Data")
    sheet["B3"], sheet["C3"], sheet["B4"] = "xm", "xb", "王秀英"
    path = tmp_path / "export.xlsx"
    workbook.save(path)
    assert read_table_file(path, "x").to_pylist() == [{"xm": "王秀英", "xb": None}]


def test_when_xlsx_has_a_value_outside_the_named_columns_then_refused(tmp_path: Path) -> None:
    workbook = openpyxl.Workbook()
    for row in (["xm", "xb"], ["王秀英", "女"], ["张伟", "男", "13812345678"]):
        workbook.active.append(row)
    path = tmp_path / "export.xlsx"
    workbook.save(path)
    message = refused(path, "王秀英", "张伟", "13812345678")
    assert "row 3 has a value in column C, which has no name in the header (row 1)" in message


def test_when_table_is_parquet_then_native_types_are_kept(tmp_path: Path) -> None:
    path = tmp_path / "clinical.csv"  # the name says CSV; the content decides
    pq.write_table(pa.table({"mrn": ["M1", "M2"], "age": [61, 7],
                             "dob": [dt.date(1963, 1, 2), dt.date(2017, 5, 6)]}), path)
    table = read_table_file(path, "clinical")
    assert table.schema.field("age").type == pa.int64()
    assert table.schema.field("dob").type == pa.date32()
    assert table.column("mrn").to_pylist() == ["M1", "M2"]


def test_when_parquet_is_truncated_then_refused(tmp_path: Path) -> None:
    path = tmp_path / "clinical.parquet"
    pq.write_table(pa.table({"xm": ["王秀英"] * 100}), path)
    path.write_bytes(path.read_bytes()[:60])
    assert "not a readable Parquet file" in refused(path, "王秀英")


# --- layout ----------------------------------------------------------------------------------


def test_when_header_repeats_a_name_then_refused_naming_positions(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("xm,xb, xm \n王秀英,女,王秀英\n", encoding="utf-8")
    message = refused(path, "王秀英")
    assert "columns 1 and 3 of the header have the same name" in message
    assert "xm" not in message.split(": ", 1)[1]


def test_when_header_has_an_empty_name_then_refused(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("xm,  ,xb\n王秀英,1,女\n", encoding="utf-8")
    assert "column 2 of the header has no name" in refused(path, "王秀英")


@pytest.mark.parametrize(("rows", "number", "fields"), [
    ("王秀英,女\r\n张伟,男,13812345678\r\n", 3, 3),
    ("\"王秀英\n北京\",女\r\n张伟\r\n", 3, 1),
])
def test_when_a_row_has_the_wrong_number_of_fields_then_refused_naming_it(
        tmp_path: Path, rows: str, number: int, fields: int) -> None:
    path = tmp_path / "t.csv"
    path.write_bytes(("xm,xb\r\n" + rows).encode("gbk"))
    message = refused(path, "王秀英", "张伟", "13812345678", "北京")
    assert (f"row {number} (counting the header as row 1) has {fields} fields, the header has 2 "
            "(comma-separated)") in message


def test_when_file_is_empty_then_refused(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_bytes(b"")
    assert "empty" in refused(path)
    path.write_bytes(b"\r\n\r\n")
    assert "no header row" in refused(path)


def test_when_file_has_a_header_only_then_the_table_is_empty(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_bytes("\ufeff 姓名 \t性别\r\n".encode("utf-8"))
    table = read_table_file(path, "t")
    assert (table.column_names, table.num_rows) == (["姓名", "性别"], 0)
    assert table.schema.field("性别").type == pa.string()


def test_text_cells_are_never_converted(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("zyh,csrq,flag,rate\n00123,1956/3/7,NA,1e3\nnull,2020-01-01,true,\n",
                    encoding="utf-8")
    assert read_table_file(path, "t").to_pydict() == {
        "zyh": ["00123", "null"], "csrq": ["1956/3/7", "2020-01-01"], "flag": ["NA", "true"],
        "rate": ["1e3", None]}


def test_table_decode_error_is_a_collect_error() -> None:
    error = TableDecodeError("a.csv", "the problem", "What to do.")
    assert isinstance(error, CollectError)
    assert (error.message, error.path, error.stage) == ("a.csv: the problem. What to do.", "a.csv",
                                                        "collect")


# --- writing ---------------------------------------------------------------------------------


def test_write_csv_utf8_writes_utf8_lf_and_keeps_cells(tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    source.write_bytes("姓名,备注\r\n王秀英,=1+1\r\n张伟,\"-2,\r\n@x\"\r\n".encode("gbk"))
    table = read_table_file(source, "in")
    out = tmp_path / "out.csv"
    write_csv_utf8(table, out)
    raw = out.read_bytes()
    assert not raw.startswith(codecs.BOM_UTF8)
    assert raw.decode("utf-8").splitlines()[0] == '"姓名","备注"'
    assert b"\r\n" not in raw.replace(b"-2,\r\n@x", b"")
    again = read_table_file(out, "out")
    assert again.equals(table)
    assert again.column("备注").to_pylist() == ["=1+1", "-2,\r\n@x"]
