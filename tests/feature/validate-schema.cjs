// Validates a devcontainer-feature.json against the official schema's definitions/Feature.
// Usage: node validate-schema.cjs SCHEMA.json FEATURE.json   (NODE_PATH = the CLI cache's node_modules)
// Prints "valid" and exits 0, or prints each error with its JSON path and exits 1.
"use strict";
const fs = require("fs");
const Ajv = require("ajv");

const [schemaPath, featurePath] = process.argv.slice(2);
if (!schemaPath || !featurePath) {
  console.error("usage: validate-schema.cjs SCHEMA.json FEATURE.json");
  process.exit(2);
}
const schema = JSON.parse(fs.readFileSync(schemaPath, "utf8"));
const feature = JSON.parse(fs.readFileSync(featurePath, "utf8"));
const ajv = new Ajv({ allErrors: true, strict: false });
ajv.addSchema(schema, "devContainerFeature");
const validate = ajv.getSchema("devContainerFeature#/definitions/Feature");
if (validate(feature)) {
  console.log("valid");
} else {
  for (const e of validate.errors) {
    console.log(`${featurePath}: ${e.instancePath || "/"} ${e.message} ${JSON.stringify(e.params)}`);
  }
  process.exit(1);
}
