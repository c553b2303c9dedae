SELECT outcome FROM release_hold($1, $2)
