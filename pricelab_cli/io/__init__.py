"""All reading, writing, format detection and output checks for pricelab tables.

Every command goes through this package, so the behaviours users rely on (formats chosen by
extension, ``-`` for the standard streams, atomic writes, provenance, messages that name the
file and the column) are the same everywhere. ``formats`` (extensions and sniffing), ``sources``
(where a table lives), ``read`` (reading and scanning), ``write`` (the run's output
transaction), ``guard`` (output paths checked before any work) and ``provenance``.
"""

# ruff: noqa: F401 - this module is the package's interface

from pricelab_cli.io.formats import (
    FORMATS,
    PROVENANCE_KEY,
    _is_special_file,
    check_format,
    detect_format,
    sniff_format,
)
from pricelab_cli.io.guard import (
    _check_nesting,
    _check_object_output,
    _glob_root,
    _input_covers,
    _inside,
    _path_key,
    _resolved,
    check_outputs,
)
from pricelab_cli.io.provenance import (
    _CREDENTIAL_KEY,
    _hide_credential,
    file_digest,
    provenance,
    provenance_row,
    read_provenance,
    read_record,
)
from pricelab_cli.io.read import (
    _HIVE_NULL,
    _INTEGER,
    _ISO_DATE,
    _check_same_columns,
    _checked_values,
    _collect,
    _described,
    _file_schema,
    _file_schemas,
    _is_float,
    _is_iso_date,
    _named,
    _partition_schema,
    _ragged_line,
    _read_raw,
    _read_whole,
    _scan_checked,
    _scan_parquet,
    _source_bytes,
    _typed,
    read_json,
    read_table,
    scan_table,
)
from pricelab_cli.io.sources import (
    _HIDDEN_PREFIXES,
    _ROW,
    PARQUET_SUFFIXES,
    TableSource,
    _dataset,
    _folder_files,
    _in_store,
    _relative_parts,
    _remote_source,
    _store_options,
    resolve_source,
)
from pricelab_cli.io.write import (
    _FULL,
    _PART_FILE,
    _PARTITION_DIR,
    _PENDING,
    CLOSED_STDOUT,
    HIVE_NULL,
    LAST_COMMIT,
    _check_replaceable,
    _dataset_problem,
    _full_disk_named,
    _LastCommit,
    _part_problem,
    _put_object,
    _replace_folder,
    _table_bytes,
    _to_stdout,
    _Transaction,
    _umask,
    _why,
    _write_part,
    _write_pieces,
    atomic_folder,
    atomic_path,
    full_disk,
    is_folder_output,
    output_failed,
    output_transaction,
    upload_at_commit,
    write_dataset,
    write_json,
    write_stdout,
    write_table,
)
from pricelab_cli.paths import STDIO, glob_regex, glob_root, has_glob, is_local
from pricelab_cli.tables import (
    ASSIGNMENT_COLUMNS,
    CANONICAL_INT,
    ID_COLUMNS,
    MAX_MAGNITUDE,
    align_id_types,
    apply_renames,
    assignment_flags,
    check_columns,
    check_finite,
    check_identifiers,
    check_numeric,
    check_unique,
    check_values,
    first_row,
    normalise_ids,
    not_a_date_error,
    parse_dates,
    time_of_day_error,
    time_zone_error,
)
