"""Independent checks of a published open-data release.

usage:
  open_data.py check RELEASE THRESHOLD
      Every dataset's package passes `frictionless validate`; its CSV, JSON and
      Parquet hold the same rows; SHA256SUMS matches every file; the DCAT-AP
      catalogue parses as RDF (rdflib) and describes every dataset and file with
      the right checksum; no published persons count is below THRESHOLD; a
      flagged row has every non-dimension value empty. Prints a JSON summary.
  open_data.py attack RELEASE QUERIES TRUTH [--drop-secondary]
      Plays the attacker: for every additive measure, recomputes suppressed
      cells from the published ones, the grand totals (from TRUTH, the
      unsuppressed results, as if published elsewhere) and the totals that two
      datasets of one universe share, solving any total with a single unknown
      until nothing more follows. Prints each recovered cell and whether it
      equals the truth; exits 1 if any was recovered. --drop-secondary treats
      secondary cells as published (a release without secondary suppression),
      to show the attack works.
  open_data.py pseudonyms WAREHOUSE SITE
      Exits 1 if any pseudonym stored in the warehouse appears in the site.
  open_data.py shacl SITE...
      Validates every release's catalogue in each SITE against the official
      DCAT-AP 3.0.1 shapes (pyshacl, no inference); exits 1 on any violation.
"""
import csv
import hashlib
import json
import pathlib
import re
import sys
import tomllib
from decimal import Decimal

import pyarrow.parquet as pq

FLAG = "suppression"


def datasets(release):
    return sorted(p.parent for p in release.glob("*/datapackage.json"))


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def norm(v):
    """A value as text, for comparing the three formats."""
    if v is None or v == "":
        return ""
    try:
        return str(Decimal(str(v)).normalize())
    except Exception:
        return str(v)


def check(release, threshold):
    import frictionless
    import rdflib

    summary = {"datasets": 0, "rows": 0, "suppressed": 0, "files": 0}
    problems = []
    for d in datasets(release):
        name = d.name
        report = frictionless.validate(str(d / "datapackage.json"))
        if not report.valid:
            problems.append(f"{name}: frictionless: {report.flatten(['type', 'note'])[:5]}")
        package = json.loads((d / "datapackage.json").read_text())
        fields = package["resources"][0]["schema"]["fields"]
        dims = [f["name"] for f in fields if "(dimension)" in f["description"]]
        persons = [f["name"] for f in fields if "(distinct persons of the cell)" in f["description"]]
        if len(persons) != 1 or not dims:
            problems.append(f"{name}: the package does not name one persons column and the dimensions")
            continue
        rows = read_csv(d / f"{name}.csv")
        js = json.loads((d / f"{name}.json").read_text())
        pa = pq.read_table(d / f"{name}.parquet").to_pylist()
        if not (len(rows) == len(js) == len(pa)):
            problems.append(f"{name}: CSV {len(rows)}, JSON {len(js)}, Parquet {len(pa)} rows")
        for i, (c, j, p) in enumerate(zip(rows, js, pa)):
            for col in c:
                if not (norm(c[col]) == norm(j.get(col)) == norm(p.get(col))):
                    problems.append(f"{name} row {i} column {col}: {c[col]!r} {j.get(col)!r} {p.get(col)!r}")
        for i, r in enumerate(rows):
            others = [k for k in r if k not in dims and k != FLAG]
            if r[FLAG]:
                summary["suppressed"] += 1
                if any(r[k] != "" for k in others):
                    problems.append(f"{name} row {i}: flagged {r[FLAG]} but values are published")
            else:
                n = r[persons[0]]
                if n == "" or int(n) < threshold:
                    problems.append(f"{name} row {i}: published persons count {n!r} below {threshold}")
        summary["datasets"] += 1
        summary["rows"] += len(rows)
    sums = {}
    for line in (release / "SHA256SUMS").read_text().splitlines():
        digest, path = line.split("  ", 1)
        sums[path] = digest
        actual = hashlib.sha256((release / path).read_bytes()).hexdigest()
        if actual != digest:
            problems.append(f"SHA256SUMS: {path} does not match")
    every = {str(p.relative_to(release)) for p in release.rglob("*") if p.is_file()} - {"SHA256SUMS"}
    if set(sums) != every:
        problems.append(f"SHA256SUMS lists {sorted(set(sums) ^ every)} wrongly")
    summary["files"] = len(sums)
    g = rdflib.Graph()
    g.parse(str(release / "catalog.jsonld"), format="json-ld")
    dcat = rdflib.Namespace("http://www.w3.org/ns/dcat#")
    spdx = rdflib.Namespace("http://spdx.org/rdf/terms#")
    found = set(g.subjects(rdflib.RDF.type, dcat.Dataset))
    if len(found) != summary["datasets"]:
        problems.append(f"catalog: {len(found)} datasets, release has {summary['datasets']}")
    distributions = 0
    for ds in found:
        for dist in g.objects(ds, dcat.distribution):
            distributions += 1
            url = str(g.value(dist, dcat.downloadURL))
            rel = url.split(f"/releases/{release.name}/", 1)[-1]
            checksum = g.value(dist, spdx.checksum)
            value = str(g.value(checksum, spdx.checksumValue))
            if sums.get(rel) != value:
                problems.append(f"catalog: {url} checksum {value} differs from SHA256SUMS")
    if distributions != 4 * summary["datasets"]:
        problems.append(f"catalog: {distributions} distributions for {summary['datasets']} datasets")
    summary["distributions"] = distributions
    problems.extend(f"catalog: {v}" for v in shacl_violations(g))
    problems.extend(f"catalog: {m}" for m in missing_recommended(g))
    for p in problems:
        print(p)
    print(json.dumps(summary))
    sys.exit(1 if problems else 0)


SHAPES = pathlib.Path(__file__).resolve().parent.parent / "shapes" / "dcat-ap-3.0.1-SHACL.ttl"


def shacl_violations(graph):
    """Each result of validating `graph` against the DCAT-AP 3.0.1 shapes, as text."""
    import pyshacl
    import rdflib

    shapes = rdflib.Graph()
    shapes.parse(str(SHAPES), format="turtle")
    conforms, report, _ = pyshacl.validate(graph, shacl_graph=shapes, inference="none", advanced=True)
    SH = rdflib.Namespace("http://www.w3.org/ns/shacl#")
    found = []
    for r in report.subjects(rdflib.RDF.type, SH.ValidationResult):
        found.append(f"{report.value(r, SH.resultSeverity).split('#')[-1]} on {report.value(r, SH.focusNode)}: "
                     f"{report.value(r, SH.resultPath)}: {report.value(r, SH.resultMessage)}")
    if not conforms and not found:
        found.append("does not conform")
    return found


def missing_recommended(g):
    """The properties a harvester scores that a dataset or distribution lacks."""
    import rdflib
    from rdflib.namespace import DCAT, DCTERMS, FOAF

    missing = []
    for catalog in g.subjects(rdflib.RDF.type, DCAT.Catalog):
        publisher = g.value(catalog, DCTERMS.publisher)
        if publisher is None or g.value(publisher, FOAF.name) is None:
            missing.append(f"{catalog}: publisher with a name")
    for ds in g.subjects(rdflib.RDF.type, DCAT.Dataset):
        for prop in [DCTERMS.publisher, DCAT.contactPoint, DCTERMS.issued, DCTERMS.modified, DCTERMS.temporal,
                     DCTERMS.spatial, DCAT.theme, DCTERMS.accrualPeriodicity, DCAT.landingPage]:
            if g.value(ds, prop) is None:
                missing.append(f"{ds}: {prop}")
        languages = {k.language for k in g.objects(ds, DCAT.keyword)}
        if languages != {"et", "en"}:
            missing.append(f"{ds}: keywords in et and en, not {languages}")
        for dist in g.objects(ds, DCAT.distribution):
            for prop in [DCAT.accessURL, DCAT.downloadURL, DCAT.byteSize, DCTERMS.license, DCTERMS.format,
                         DCAT.mediaType]:
                if g.value(dist, prop) is None:
                    missing.append(f"{dist}: {prop}")
    return missing


def shacl(sites):
    import rdflib

    problems, checked = [], 0
    for site in sites:
        for catalog in sorted(pathlib.Path(site).glob("releases/*/catalog.jsonld")):
            g = rdflib.Graph()
            g.parse(str(catalog), format="json-ld")
            problems.extend(f"{catalog}: {v}" for v in shacl_violations(g))
            checked += 1
    for p in problems:
        print(p)
    print(json.dumps({"catalogues": checked, "violations": len(problems)}))
    sys.exit(1 if problems or not checked else 0)


def attack(release, queries, truth, drop_secondary):
    metas = {}
    for d in datasets(release):
        meta = tomllib.loads((queries / f"{d.name}.toml").read_text())
        metas[d.name] = meta
    recovered = []
    universes = sorted({m["universe"] for m in metas.values()})
    for universe in universes:
        names = [n for n, m in metas.items() if m["universe"] == universe]
        dims = {n: [c for c, v in metas[n]["columns"].items() if v["role"] == "dimension"] for n in names}
        measures = sorted(set.intersection(*[
            {c for c, v in metas[n]["columns"].items() if v.get("additive")} for n in names
        ]))
        published = {n: read_csv(release / n / f"{n}.csv") for n in names}
        true = {n: read_csv(truth / f"{n}.csv") for n in names}
        for n in names:
            keys = lambda rows: [tuple(r[c] for c in dims[n]) for r in rows]
            if keys(published[n]) != keys(true[n]):
                sys.exit(f"{n}: the truth's rows are not the published rows")
        for measure in measures:
            # Unknowns: (dataset, row). Known values: published ones.
            value = {}
            unknown = set()
            for n in names:
                for i, (r, t) in enumerate(zip(published[n], true[n])):
                    if r[FLAG] == "" or (drop_secondary and r[FLAG] == "secondary"):
                        value[(n, i)] = Decimal(t[measure] or 0) if r[FLAG] else Decimal(r[measure] or 0)
                    else:
                        unknown.add((n, i))
            # Equations: sum(cells) == total, as (cells with sign, total).
            equations = []
            for n in names:
                total = sum(Decimal(t[measure] or 0) for t in true[n])
                equations.append(([((n, i), 1) for i in range(len(published[n]))], total))
            for a in names:
                for b in names:
                    if a >= b:
                        continue
                    shared = [c for c in dims[a] if c in dims[b]]
                    if not shared:
                        continue
                    groups = {}
                    for n, sign in ((a, 1), (b, -1)):
                        for i, r in enumerate(published[n]):
                            groups.setdefault(tuple(r[c] for c in shared), []).append(((n, i), sign))
                    for cells in groups.values():
                        equations.append((cells, Decimal(0)))
            progress = True
            while progress:
                progress = False
                for cells, total in equations:
                    left = [(c, s) for c, s in cells if c in unknown]
                    if len(left) != 1:
                        continue
                    (cell, sign) = left[0]
                    rest = sum(s * value[c] for c, s in cells if c not in unknown)
                    value[cell] = (total - rest) * sign
                    unknown.discard(cell)
                    n, i = cell
                    real = Decimal(true[n][i][measure] or 0)
                    recovered.append((n, i, measure, published[n][i][FLAG], value[cell], real))
                    progress = True
    for n, i, measure, flag, got, real in recovered:
        print(f"recovered {n} row {i} ({flag}) {measure} = {got} (truth {real}, {'equal' if got == real else 'differs'})")
    print(f"{len(recovered)} suppressed cells recovered", file=sys.stderr)
    sys.exit(1 if recovered else 0)


def pseudonyms(warehouse, site):
    hexes = re.compile(rb"[0-9a-f]{32}")
    stored = set()
    for f in warehouse.rglob("*.parquet"):
        table = pq.read_table(f)
        for name in table.column_names:
            for v in table.column(name).to_pylist():
                if isinstance(v, str) and hexes.fullmatch(v.encode()):
                    stored.add(v.encode())
    found = []
    for f in (p for p in site.rglob("*") if p.is_file()):
        data = f.read_bytes()
        if f.suffix == ".parquet":
            for name in (t := pq.read_table(f)).column_names:
                data += b"\n" + "\n".join(map(str, t.column(name).to_pylist())).encode()
        found.extend((f, h) for h in set(hexes.findall(data)) & stored)
    for f, h in found:
        print(f"{f}: holds pseudonym {h.decode()}")
    print(f"{len(stored)} pseudonyms of the warehouse searched for", file=sys.stderr)
    sys.exit(1 if found or not stored else 0)


def main():
    command, *args = sys.argv[1:]
    if command == "check":
        check(pathlib.Path(args[0]).resolve(), int(args[1]))
    elif command == "attack":
        attack(pathlib.Path(args[0]), pathlib.Path(args[1]), pathlib.Path(args[2]), "--drop-secondary" in args)
    elif command == "pseudonyms":
        pseudonyms(pathlib.Path(args[0]), pathlib.Path(args[1]))
    elif command == "shacl":
        shacl(args)
    else:
        sys.exit(f"unknown command {command}")


main()
