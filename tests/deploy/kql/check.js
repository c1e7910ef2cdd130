// Parses and semantically analyzes KQL with Microsoft's Kusto.Language (the analyzer behind
// Azure Data Explorer, Log Analytics and Sentinel), against a database we describe: tables
// with their columns and stored functions. Reads one JSON object on stdin:
//   {"tables": [{"name", "schema": "(col:type, ...)"}],
//    "functions": [{"name", "parameters": "(p:type=default, ...)", "body": "{ ... }"}],
//    "queries": {"<name>": "<query text>"}}
// and writes, per query, every diagnostic (errors and warnings, with the text they point
// at) and the columns of its result: {"<name>": {"diagnostics": [...], "columns": [[n, t]]}}.
"use strict";
require("@kusto/language-service-next/bridge.min.js");
require("@kusto/language-service-next/Kusto.Language.Bridge.min.js");

const S = Kusto.Language.Symbols;

function list(items) {
  const out = [];
  for (let i = 0; i < items.Count; i++) out.push(items.getItem(i));
  return out;
}

const input = JSON.parse(require("fs").readFileSync(0, "utf8"));
const symbols = [];
for (const t of input.tables) symbols.push(new S.TableSymbol.$ctor7(t.name, t.schema, null));
for (const f of input.functions) symbols.push(new S.FunctionSymbol.$ctor16(f.name, f.parameters, f.body, null));
const globals = Kusto.Language.GlobalState.Default.WithDatabase(new S.DatabaseSymbol.ctor("workspace", symbols));

const output = {};
for (const [name, text] of Object.entries(input.queries)) {
  const code = Kusto.Language.KustoCode.ParseAndAnalyze(text, globals);
  const diagnostics = list(code.GetDiagnostics()).map((d) => ({
    severity: String(d.Severity),
    code: d.Code,
    message: d.Message,
    at: text.substr(d.Start, Math.min(d.Length, 80)),
  }));
  let columns = null;
  const result = code.ResultType;
  if (result && result.Columns) {
    columns = list(result.Columns).map((c) => [c.Name, c.Type.Name]);
  }
  output[name] = { diagnostics, columns };
}
process.stdout.write(JSON.stringify(output));
