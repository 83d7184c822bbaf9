"""The result store: who a result is (identity keys) and whether it is whole (records).

Every stored result (a trained adapter, an evaluation) lives in a folder addressed by a key that is
a hash of the *content* that determines its numbers: base weights, tokenizer, data files, profile
vector, prompt texts, generation settings, scorer identity and the results-schema version. Paths,
logging and progress settings are never part of a key. `identity` hashes content and composes the
keys from parts the layers above compute (value_harms.models.identity, value_harms.train.keys,
value_harms.scoring.identity), `layout` says
where a result lives, `records` writes and reads result folders (complete / partial / damaged) as
typed `EvalRecord`s, `files` does atomic writes and locks, `hashing` every content hash, `cache` the one
cache interface (`Cache.get(request, compute)`), `kv` the sqlite store behind the caches.
"""

from value_harms.store.identity import (
    SCHEMA_VERSION,
    content_sha256,
    digest,
    eval_key,
)
from value_harms.store.records import (
    COMPLETE,
    PARTIAL,
    EvalRecord,
    RecordError,
    ResultState,
    read_result,
    result_state,
    write_result,
)
