"""chaosblade error codes (chaosblade-spec-go `spec.Code`) and the one exception type.

Every failure a user can cause is raised as a BladeError carrying one of these codes; the CLI
turns it into chaosblade's JSON Response. Nothing else should reach the user.
"""


class Code:
    OK = 200
    RETURN_OK_DIRECTLY = 201
    FORBIDDEN = 43000
    ACTION_NOT_SUPPORT = 44000
    PARAMETER_LESS = 45000
    PARAMETER_ILLEGAL = 46000
    PARAMETER_INVALID = 47000
    PARAMETER_INVALID_PRO_NAME = 47001
    PARAMETER_INVALID_PRO_ID_NOT_BY_NAME = 47002
    PARAMETER_INVALID_TOO_MANY_PROCESS = 47012
    COMMAND_ILLEGAL = 49000
    CHAOSBLADE_FILE_NOT_FOUND = 51000
    COMMAND_NOT_FOUND = 52000  # 52000-52020: a needed tool (dlv, go) is missing
    UNEXPECTED_STATUS = 54000
    HANDLER_EXEC_NOT_FOUND = 56000
    RESULT_UNMARSHAL_FAILED = 60000
    RESULT_MARSHAL_FAILED = 60001
    GENERATE_UID_FAILED = 60002
    PROCESS_ID_BY_NAME_FAILED = 63010
    PROCESS_NOT_EXIST = 63012
    FILE_NOT_EXIST = 63041
    OS_CMD_EXEC_FAILED = 63063
    HTTP_EXEC_FAILED = 63064
    DATABASE_ERROR = 67001
    DATA_NOT_FOUND = 67002


class BladeError(Exception):
    """A failure reported to the user as a chaosblade Response {code, success:false, error}."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code
        self.message = message

    def __str__(self):
        return self.message
