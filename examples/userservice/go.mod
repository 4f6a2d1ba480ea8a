module example.com/userservice

go 1.19
