// The application's MongoDB user, for compose.yaml. The mongo image runs this once, with
// mongosh as the root user it made from MONGO_INITDB_ROOT_*, when it initialises an empty
// data volume (changing MONGO_PASSWORD later changes nothing: see compose.yaml).
//
// The user may read and write the `phoenix` database and nothing else: the application,
// the collector and the backups need no more, and a leaked connection string is not the
// root password. (`phoenix backup --verify` restores into a scratch database beside it,
// which needs more: run that one with the root user's connection string.)
const password = process.env.MONGO_PASSWORD;
if (!password) {
  throw new Error("MONGO_PASSWORD is not set: the application's user cannot be created");
}
db.getSiblingDB("admin").createUser({
  user: "phoenix",
  pwd: password,
  roles: [{ role: "readWrite", db: "phoenix" }],
});
